/*
 * splitrl.agents.baselines._backlog: the value iteration of backlog.backlog_cost in C, and the
 * dominance filter that runs before it.
 *
 * The numpy code in backlog.py is the reference: this one performs the same double-precision
 * operations in the same order (built without fused multiply-add contraction), so it returns the
 * same values bit for bit. It exists because the loop runs up to 64 short iterations per request,
 * and numpy's per-call overhead made it most of the time of every backlog-aware policy; the
 * dominance filter's pairwise comparisons were a quarter of what was left.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>

/* A read-only C-contiguous buffer of `count` items of `itemsize` bytes; -1 with ValueError. */
static int check_buffer(const Py_buffer *buffer, const char *name, Py_ssize_t count,
                        Py_ssize_t itemsize) {
    if (buffer->len != count * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, expected %zd", name, buffer->len,
                     count * itemsize);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(relative_values_doc,
             "relative_values(now, below, weight, points, actions, horizon, tolerance, value)\n"
             "--\n\n"
             "Relative value iteration of the backlog lookahead, in place on `value`.\n\n"
             "`now` (float64) and `weight` (float64) and `below` (int64) are C-ordered\n"
             "(points, actions) arrays; `value` is a writable float64 array of `points` zeros.\n"
             "Returns the number of iterations run.");

static PyObject *relative_values(PyObject *self, PyObject *args) {
    Py_buffer now_buffer, below_buffer, weight_buffer, value_buffer;
    Py_ssize_t points, actions;
    int horizon;
    double tolerance;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*nnidw*", &now_buffer, &below_buffer, &weight_buffer,
                          &points, &actions, &horizon, &tolerance, &value_buffer)) {
        return NULL;
    }
    PyObject *result = NULL;
    double *relative = NULL;
    if (points < 2 || actions < 1) {
        PyErr_Format(PyExc_ValueError, "need at least 2 points and 1 action, got %zd and %zd",
                     points, actions);
        goto done;
    }
    const Py_ssize_t cells = points * actions;
    if (check_buffer(&now_buffer, "now", cells, sizeof(double)) < 0 ||
        check_buffer(&below_buffer, "below", cells, sizeof(int64_t)) < 0 ||
        check_buffer(&weight_buffer, "weight", cells, sizeof(double)) < 0 ||
        check_buffer(&value_buffer, "value", points, sizeof(double)) < 0) {
        goto done;
    }
    const double *now = now_buffer.buf;
    const int64_t *below = below_buffer.buf;
    const double *weight = weight_buffer.buf;
    double *value = value_buffer.buf;
    for (Py_ssize_t cell = 0; cell < cells; cell++) {
        if (below[cell] < 0 || below[cell] > points - 2) {
            PyErr_Format(PyExc_ValueError, "below[%zd] = %lld is outside 0..%zd", cell,
                         (long long)below[cell], points - 2);
            goto done;
        }
    }
    relative = PyMem_Malloc((size_t)points * sizeof(double));
    if (relative == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int iterations = 0;
    while (iterations < horizon) {
        iterations++;
        for (Py_ssize_t point = 0; point < points; point++) {
            const Py_ssize_t row = point * actions;
            double best = -INFINITY;
            for (Py_ssize_t action = 0; action < actions; action++) {
                const Py_ssize_t cell = row + action;
                const double continuation = value[below[cell]] * (1.0 - weight[cell]) +
                                            value[below[cell] + 1] * weight[cell];
                const double total = now[cell] + continuation;
                /* numpy's max: the first NaN wins */
                if (total > best || isnan(total)) {
                    best = total;
                    if (isnan(total)) {
                        break;
                    }
                }
            }
            relative[point] = best;
        }
        const double first = relative[0];
        double change = 0.0;
        for (Py_ssize_t point = 0; point < points; point++) {
            relative[point] -= first;
            const double difference = fabs(relative[point] - value[point]);
            if (difference > change || isnan(difference)) {
                change = difference;
            }
        }
        for (Py_ssize_t point = 0; point < points; point++) {
            value[point] = relative[point];
        }
        if (change <= tolerance) {
            break;
        }
    }
    result = PyLong_FromLong(iterations);
done:
    PyMem_Free(relative);
    PyBuffer_Release(&now_buffer);
    PyBuffer_Release(&below_buffer);
    PyBuffer_Release(&weight_buffer);
    PyBuffer_Release(&value_buffer);
    return result;
}

PyDoc_STRVAR(undominated_doc,
             "undominated(criteria, count, actions, keep)\n"
             "--\n\n"
             "Mask of the actions no other action matches or beats on every criterion.\n\n"
             "`criteria` (float64) is a C-ordered (count, actions) array, smaller is better on\n"
             "every row; `keep` is a writable bool array of `actions` entries, set in place: an\n"
             "action is dropped when another is no worse on every criterion and better on one, or\n"
             "equal on all and earlier (the first of equals is kept). Comparisons with NaN are\n"
             "false, as in numpy.");

static PyObject *undominated(PyObject *self, PyObject *args) {
    Py_buffer criteria_buffer, keep_buffer;
    Py_ssize_t count, actions;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnw*", &criteria_buffer, &count, &actions, &keep_buffer)) {
        return NULL;
    }
    PyObject *result = NULL;
    if (count < 1 || actions < 0) {
        PyErr_Format(PyExc_ValueError, "need at least 1 criterion and 0 actions, got %zd and %zd",
                     count, actions);
        goto done;
    }
    if (check_buffer(&criteria_buffer, "criteria", count * actions, sizeof(double)) < 0 ||
        check_buffer(&keep_buffer, "keep", actions, 1) < 0) {
        goto done;
    }
    const double *criteria = criteria_buffer.buf;
    unsigned char *keep = keep_buffer.buf;
    for (Py_ssize_t candidate = 0; candidate < actions; candidate++) {
        int dominated = 0;
        for (Py_ssize_t other = 0; other < actions && !dominated; other++) {
            if (other == candidate) {
                continue;
            }
            int no_worse = 1;
            int better = other < candidate;
            for (Py_ssize_t row = 0; row < count && no_worse; row++) {
                const double mine = criteria[row * actions + candidate];
                const double theirs = criteria[row * actions + other];
                no_worse = theirs <= mine;
                better |= theirs < mine;
            }
            dominated = no_worse && better;
        }
        keep[candidate] = (unsigned char)!dominated;
    }
    result = PyLong_FromSsize_t(actions);
done:
    PyBuffer_Release(&criteria_buffer);
    PyBuffer_Release(&keep_buffer);
    return result;
}

static PyMethodDef methods[] = {
    {"relative_values", relative_values, METH_VARARGS, relative_values_doc},
    {"undominated", undominated, METH_VARARGS, undominated_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "splitrl.agents.baselines._backlog",
    "The backlog lookahead's value iteration and dominance filter in C (see backlog.py).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__backlog(void) { return PyModule_Create(&module); }
