/* The in-order lane's read of a usual stream v1 image (stemdaq._lane; the Python reference is
 * receiver/fast1.py, FastImageDecoder1, whose usual() builds what this reads with).
 *
 * A v1 image is three or four parts: the image header (JSON), the data header (JSON), the
 * data, the config (JSON, times). Within a series each JSON part is the same bytes but for a
 * few values, so each is read with a *pattern*: literal bytes, and between them an integer
 * (up to 64 JSON whitespace characters, then 0 or 1-18 digits without a leading zero: fast1's
 * _INT after its _WS) or a string's content (up to 256 printable ASCII characters but the quote
 * and the backslash: fast1's _STR; its closing quote is the next literal). The part must end
 * where the pattern does. Anything else is not a usual image, and the Python path reads it.
 */
#ifndef STEMDAQ_V1_H
#define STEMDAQ_V1_H

#include "_usual.h"

#define V1_MAX_ITEMS 9
#define V1_LIT 0
#define V1_INT 1
#define V1_STR 2

typedef struct {
    int n;
    int kind[V1_MAX_ITEMS];
    const unsigned char *lit[V1_MAX_ITEMS];
    Py_ssize_t len[V1_MAX_ITEMS];
} v1_pattern_t;

/* A pattern from a tuple of bytes (literals) and ints (V1_INT, V1_STR); -1 with an exception.
 * The pointers point into the bytes objects: whoever holds the pattern holds the tuple. */
static inline int v1_pattern_parse(PyObject *tup, v1_pattern_t *pt)
{
    if (!PyTuple_Check(tup) || PyTuple_GET_SIZE(tup) > V1_MAX_ITEMS) {
        PyErr_SetString(PyExc_TypeError, "a v1 pattern is a tuple of at most 9 items");
        return -1;
    }
    pt->n = (int)PyTuple_GET_SIZE(tup);
    for (int i = 0; i < pt->n; i++) {
        PyObject *item = PyTuple_GET_ITEM(tup, i);
        if (PyBytes_Check(item)) {
            pt->kind[i] = V1_LIT;
            pt->lit[i] = (const unsigned char *)PyBytes_AS_STRING(item);
            pt->len[i] = PyBytes_GET_SIZE(item);
        } else {
            const long kind = PyLong_AsLong(item);
            if (kind != V1_INT && kind != V1_STR) {
                if (!PyErr_Occurred()) {
                    PyErr_SetString(PyExc_ValueError, "a v1 pattern item is bytes, 1 or 2");
                }
                return -1;
            }
            pt->kind[i] = (int)kind;
            pt->lit[i] = NULL;
            pt->len[i] = 0;
        }
    }
    /* literals and holes alternate, a literal first and last; a string's closing quote opens
     * the literal after it (as fast1.py's _pattern builds them) */
    for (int i = 0; i < pt->n; i++) {
        const int lit = pt->kind[i] == V1_LIT;
        if (lit != (i % 2 == 0) || (i == pt->n - 1 && !lit) ||
            (pt->kind[i] == V1_STR && (pt->len[i + 1] < 1 || pt->lit[i + 1][0] != '"'))) {
            PyErr_SetString(PyExc_ValueError, "a v1 pattern: literal, hole, literal, ...");
            return -1;
        }
    }
    return 0;
}

static inline int v1_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* 1 when the end bytes at p are the pattern, its integers in out (at most max_out), else 0. */
static inline int v1_pattern_match(const unsigned char *p, Py_ssize_t end,
                                   const v1_pattern_t *pt, uint64_t *out, int max_out)
{
    Py_ssize_t at = 0;
    int n_out = 0;
    for (int i = 0; i < pt->n; i++) {
        if (pt->kind[i] == V1_LIT) {
            if (end - at < pt->len[i] ||
                (pt->len[i] && memcmp(p + at, pt->lit[i], pt->len[i]) != 0)) {
                return 0;
            }
            at += pt->len[i];
        } else if (pt->kind[i] == V1_INT) {
            int ws = 0;
            while (at < end && v1_ws(p[at])) {
                if (++ws > 64) {
                    return 0;
                }
                at++;
            }
            if (at >= end || p[at] < '0' || p[at] > '9') {
                return 0;
            }
            uint64_t v = 0;
            int digits = 0;
            if (p[at] == '0') {
                at++;
                digits = 1;
            } else {
                while (at < end && p[at] >= '0' && p[at] <= '9') {
                    if (++digits > 18) {
                        return 0;
                    }
                    v = 10 * v + (uint64_t)(p[at] - '0');
                    at++;
                }
            }
            if (at < end && p[at] >= '0' && p[at] <= '9') {
                return 0; /* "01": not a JSON integer */
            }
            if (n_out >= max_out) {
                return 0;
            }
            out[n_out++] = v;
        } else { /* V1_STR: up to the closing quote, which the next literal holds */
            Py_ssize_t n = 0;
            while (at < end && p[at] != '"') {
                const unsigned char c = p[at];
                if (c < 0x20 || c > 0x7e || c == '\\' || ++n > 256) {
                    return 0;
                }
                at++;
            }
        }
    }
    return at == end && n_out == max_out;
}

#endif
