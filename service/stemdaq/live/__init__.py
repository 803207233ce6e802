"""The live view: virtual detectors and maps of the running scan, off the hot path, budgeted.

``geometry`` (beam centre, disk, annulus: given or found), ``kernels`` (one matrix product per
batch of frames), ``maps`` (per-position values, filled mask, changed rows, the binned copy),
``hub`` (the running or last acquisition's maps for the API) and ``stream`` (the WebSocket's
binary updates, latest-only per client).
"""
