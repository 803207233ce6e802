/* The in-order lane's object (stemdaq._lane): its state, shared by _lane.c (the type, stream v2
 * and the chunk) and _lane_v1.c (stream v1). */
#ifndef STEMDAQ_LANE_H
#define STEMDAQ_LANE_H

#include "_usual.h"
#include "_v1.h"

#define MAX_EXACT (((uint64_t)1) << 53) /* integers a double holds exactly */

typedef struct {
    PyObject_HEAD
    /* fixed at construction: the dataset's geometry and the buffers the lane writes */
    Py_ssize_t k, n_k, n_pos, per_row, n_keys;
    int serpentine;
    Py_buffer seen, in_file, pending, written, frame_id, t_start, t_stop, t_real, grid;
    int have_grid;
    unsigned char header[12]; /* the chunk's: K frames of bytes, the block size */
    PyObject *zero;           /* the block table of an all-zero frame */
    /* armed: the usual image of the series (stream v2, or v1: its parts' patterns) */
    int ready, armed; /* initialised; push may take frames */
    PyObject *layout, *payload;
    usual_t u;
    int v1, v1_parts, v1_size; /* a v1 series: its parts (3 or 4), a size in its data header */
    v1_pattern_t pat[3];      /* v1: image header, data header, config */
    double start_den, stop_den, real_time;
    int has_start, has_stop, has_real;
    int min_class; /* the summary takes frames whose grid class is >= this */
    /* the chunk being filled: its first position (slot 0), the position of its first frame and
     * the direction the frames come in (+1; -1 on the odd rows of a serpentine scan, which
     * arrive from the last column down) */
    Py_ssize_t key, pos0, first, need, filled;
    int dir;
    double t0;
    int64_t *slot_id;
    uint64_t *slot_start, *slot_stop, *slot_real;
    Py_ssize_t *slot_off; /* k + 1 offsets of each frame's blocks in buf */
    unsigned char *buf, *rev; /* the frames' blocks as they came; a full reversed chunk */
    Py_ssize_t cap, rev_cap, used, exports;
    const unsigned char *out; /* the full chunk: buf, or rev for a reversed one */
    Py_ssize_t out_len;
    /* counts since take_counts */
    long long frames, bytes, unwanted;
    /* the last frame taken */
    Py_ssize_t last_pos, last_start, last_stop;
    uint64_t last_value[4];
} Lane;

/* _lane_v1.c */
PyObject *stemdaq_lane_arm_v1(Lane *self, PyObject *const *args, Py_ssize_t nargs);
int stemdaq_lane_read_v1(Lane *self, const Py_buffer *views, usual_read_t *r);

#endif
