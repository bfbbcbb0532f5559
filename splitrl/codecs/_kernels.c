/*
 * splitrl.codecs._kernels: the codec's C core (csrc/splitrl_codec.h) for Python. Each function
 * runs one hot loop of the numpy modules, or a whole float32 frame each way, on buffers.
 *
 * The numpy modules are the reference: every function here produces the same bytes and the same
 * values, and the run-length decoder raises CodecError with the same messages, checked in the
 * same order. The core does the work; this file only converts arguments, allocates the results
 * and turns the core's status into exceptions.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "csrc/splitrl_codec.h"

static PyObject *codec_error = NULL;

static int check_bits(int bits) {
    if (bits < 1 || bits > 8) {
        PyErr_Format(PyExc_ValueError, "bits must be 1..8, got %d", bits);
        return -1;
    }
    return 0;
}

static int check_count(uint64_t count) {
    if (count > SPLITRL_MAX_COUNT) {
        PyErr_Format(PyExc_ValueError, "at most %llu elements, got %llu",
                     (unsigned long long)SPLITRL_MAX_COUNT, (unsigned long long)count);
        return -1;
    }
    return 0;
}

/* A workspace of `words` 32-bit words (NULL with MemoryError). */
static uint32_t *allocate_words(uint64_t words) {
    uint32_t *memory = PyMem_Malloc(words ? words * sizeof(uint32_t) : 1);
    if (memory == NULL) {
        PyErr_NoMemory();
    }
    return memory;
}

/* splitrl_decode_runs() into `codes`; -1 with CodecError (or MemoryError). */
static int decode_runs(const uint8_t *payload, uint64_t size, int bits, uint64_t count,
                       uint8_t *codes) {
    char message[256];
    const int status = splitrl_decode_runs(payload, size, bits, count, codes, message,
                                           sizeof message);
    if (status == SPLITRL_NO_MEMORY) {
        PyErr_NoMemory();
        return -1;
    }
    if (status != SPLITRL_OK) {
        PyErr_SetString(codec_error, message);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(run_length_encode_doc,
             "run_length_encode(codes, bits, zero_code)\n--\n\n"
             "splitrl.codecs.rle.run_length_encode for a contiguous uint8 buffer of codes.");

static PyObject *run_length_encode(PyObject *self, PyObject *args) {
    Py_buffer buffer;
    int bits, zero_code;
    PyObject *result = NULL;
    uint32_t *workspace = NULL;
    if (!PyArg_ParseTuple(args, "y*ii", &buffer, &bits, &zero_code)) {
        return NULL;
    }
    const size_t count = (size_t)buffer.len;
    if (check_bits(bits) < 0 || check_count(count) < 0) {
        goto done;
    }
    if (zero_code < 0 || zero_code > 255) {
        PyErr_Format(PyExc_ValueError, "zero_code must be in range(0, 256), got %d", zero_code);
        goto done;
    }
    workspace = allocate_words(SPLITRL_RUNS_WORKSPACE_WORDS((uint64_t)count));
    if (workspace == NULL) {
        goto done;
    }
    SplitrlRuns runs;
    splitrl_scan_runs(buffer.buf, count, bits, zero_code, workspace, &runs);
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)runs.size);
    if (result != NULL) {
        splitrl_write_runs((uint8_t *)PyBytes_AS_STRING(result), &runs);
    }
done:
    PyMem_Free(workspace);
    PyBuffer_Release(&buffer);
    return result;
}

PyDoc_STRVAR(run_length_decode_doc,
             "run_length_decode(payload, bits, count)\n--\n\n"
             "splitrl.codecs.rle.run_length_decode into a bytearray of `count` codes; raises\n"
             "CodecError with the same messages, checked in the same order.");

static PyObject *run_length_decode(PyObject *self, PyObject *args) {
    Py_buffer buffer;
    int bits;
    unsigned long long count;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*iK", &buffer, &bits, &count)) {
        return NULL;
    }
    if (check_bits(bits) == 0 && check_count(count) == 0) {
        result = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)count);
        if (result != NULL &&
            decode_runs(buffer.buf, (uint64_t)buffer.len, bits, count,
                        (uint8_t *)PyByteArray_AS_STRING(result)) < 0) {
            Py_CLEAR(result);
        }
    }
    PyBuffer_Release(&buffer);
    return result;
}

PyDoc_STRVAR(pack_codes_doc,
             "pack_codes(codes, width)\n--\n\n"
             "splitrl.codecs.bitpack.pack_bits for a contiguous uint8 buffer, width 1..8.");

static PyObject *pack_codes(PyObject *self, PyObject *args) {
    Py_buffer buffer;
    int width;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*i", &buffer, &width)) {
        return NULL;
    }
    if (check_bits(width) == 0) {
        const uint64_t size = splitrl_packed_size((uint64_t)buffer.len, width);
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
        if (result != NULL) {
            splitrl_pack_codes((uint8_t *)PyBytes_AS_STRING(result), buffer.buf,
                               (size_t)buffer.len, width);
        }
    }
    PyBuffer_Release(&buffer);
    return result;
}

PyDoc_STRVAR(unpack_codes_doc,
             "unpack_codes(buffer, width, count)\n--\n\n"
             "splitrl.codecs.bitpack.unpack_bits for width 1..8, into a bytearray; the buffer\n"
             "must hold exactly the packed size (ValueError otherwise).");

static PyObject *unpack_codes(PyObject *self, PyObject *args) {
    Py_buffer buffer;
    int width;
    Py_ssize_t count;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*in", &buffer, &width, &count)) {
        return NULL;
    }
    if (check_bits(width) == 0) {
        if (count < 0 ||
            (uint64_t)buffer.len != splitrl_packed_size((uint64_t)count, width)) {
            PyErr_SetString(PyExc_ValueError, "the buffer does not hold count values of width bits");
        } else {
            result = PyByteArray_FromStringAndSize(NULL, count);
            if (result != NULL) {
                splitrl_unpack_codes(buffer.buf, (size_t)count, width,
                                     (uint8_t *)PyByteArray_AS_STRING(result));
            }
        }
    }
    PyBuffer_Release(&buffer);
    return result;
}

PyDoc_STRVAR(quantize_float32_doc,
             "quantize_float32(values, bits)\n--\n\n"
             "Per-tensor min-max quantization of a contiguous float32 buffer without clipping,\n"
             "as splitrl.codecs.quantize.quantize: (codes as a bytearray, offset, scale), or None\n"
             "where numpy's result cannot be reproduced exactly (non-finite values or range, or\n"
             "both signed zeros at an end of the range).");

static PyObject *quantize_float32(PyObject *self, PyObject *args) {
    Py_buffer buffer;
    int bits;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*i", &buffer, &bits)) {
        return NULL;
    }
    const size_t count = (size_t)buffer.len / sizeof(float);
    const float *values = buffer.buf;
    if (check_bits(bits) < 0) {
        goto done;
    }
    if (count == 0 || buffer.len % sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "values must be a non-empty float32 buffer");
        goto done;
    }
    float lo, scale;
    if (!splitrl_float32_parameters(values, count, bits, &lo, &scale)) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *codes = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)count);
    if (codes == NULL) {
        goto done;
    }
    splitrl_quantize((uint8_t *)PyByteArray_AS_STRING(codes), values, 1, count, lo, scale,
                     (1 << bits) - 1);
    result = Py_BuildValue("Ndd", codes, (double)lo, (double)scale);
done:
    PyBuffer_Release(&buffer);
    return result;
}

PyDoc_STRVAR(quantize_uint8_doc,
             "quantize_uint8(values, bits)\n--\n\n"
             "Per-tensor quantization of a non-empty contiguous uint8 buffer with the integer step\n"
             "of splitrl.codecs.quantize.quantize: (codes as a bytearray, offset, scale).");

static PyObject *quantize_uint8(PyObject *self, PyObject *args) {
    Py_buffer buffer;
    int bits;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*i", &buffer, &bits)) {
        return NULL;
    }
    const size_t count = (size_t)buffer.len;
    const uint8_t *values = buffer.buf;
    if (check_bits(bits) < 0) {
        goto done;
    }
    if (count == 0) {
        PyErr_SetString(PyExc_ValueError, "values must be a non-empty uint8 buffer");
        goto done;
    }
    uint8_t lo = values[0], hi = values[0];
    for (size_t index = 0; index < count; index++) {
        lo = values[index] < lo ? values[index] : lo;
        hi = values[index] > hi ? values[index] : hi;
    }
    const int levels = (1 << bits) - 1;
    const float steps = ceilf(((float)hi - (float)lo) / (float)levels);
    const float scale = steps > 1.0f ? steps : 1.0f;
    PyObject *codes = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)count);
    if (codes == NULL) {
        goto done;
    }
    splitrl_quantize((uint8_t *)PyByteArray_AS_STRING(codes), values, 0, count, (float)lo, scale,
                     levels);
    result = Py_BuildValue("Ndd", codes, (double)lo, (double)scale);
done:
    PyBuffer_Release(&buffer);
    return result;
}

PyDoc_STRVAR(dequantize_float32_doc,
             "dequantize_float32(codes, offset, scale)\n--\n\n"
             "float32 offset + code * scale for every uint8 code (float32 arithmetic, as\n"
             "splitrl.codecs.quantize.dequantize with float32 parameters), into a bytearray.");

static PyObject *dequantize_float32(PyObject *self, PyObject *args) {
    Py_buffer buffer;
    float offset, scale;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*ff", &buffer, &offset, &scale)) {
        return NULL;
    }
    result = PyByteArray_FromStringAndSize(NULL, buffer.len * (Py_ssize_t)sizeof(float));
    if (result != NULL) {
        splitrl_dequantize((float *)PyByteArray_AS_STRING(result), buffer.buf,
                           (size_t)buffer.len, offset, scale, 256);
    }
    PyBuffer_Release(&buffer);
    return result;
}

PyDoc_STRVAR(encode_float32_frame_doc,
             "encode_float32_frame(array, bits, max_elements)\n--\n\n"
             "The frame splitrl.codecs.encode(array, bits) makes for a non-empty C-contiguous\n"
             "float32 array of at most max_elements elements (per-tensor quantizer, run-length\n"
             "coding, no entropy stage), byte for byte; None where the Python code must run.");

static PyObject *encode_float32_frame(PyObject *self, PyObject *args) {
    PyObject *array, *result = NULL;
    int bits;
    unsigned long long max_elements;
    Py_buffer view;
    uint32_t *workspace = NULL;
    if (!PyArg_ParseTuple(args, "OiK", &array, &bits, &max_elements)) {
        return NULL;
    }
    if (bits < 1 || bits > 8) {
        Py_RETURN_NONE;
    }
    if (PyObject_GetBuffer(array, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    int supported = view.itemsize == 4 && view.format != NULL && strcmp(view.format, "f") == 0 &&
                    view.ndim <= SPLITRL_MAX_NDIM;
    uint64_t count = 1;
    uint32_t shape[SPLITRL_MAX_NDIM];
    for (int axis = 0; supported && axis < view.ndim; axis++) {
        count *= (uint64_t)view.shape[axis];
        supported = count > 0 && count <= max_elements && count <= SPLITRL_MAX_COUNT;
        shape[axis] = (uint32_t)view.shape[axis];
    }
    if (!supported) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    const uint64_t words = SPLITRL_ENCODE_WORKSPACE_WORDS(count);
    const size_t capacity = SPLITRL_FRAME_CAPACITY((size_t)count, (size_t)view.ndim);
    workspace = allocate_words(words);
    if (workspace == NULL) {
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)capacity);
    if (result == NULL) {
        goto done;
    }
    size_t size;
    const int status = splitrl_encode_float32_frame(
        view.buf, shape, view.ndim, bits, workspace, (size_t)words * sizeof(uint32_t),
        (uint8_t *)PyBytes_AS_STRING(result), capacity, &size);
    if (status != SPLITRL_OK) {
        /* the sizes above are enough: only tensors the reference must encode get here */
        Py_SETREF(result, Py_NewRef(Py_None));
        goto done;
    }
    _PyBytes_Resize(&result, (Py_ssize_t)size);
done:
    PyMem_Free(workspace);
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(decode_float32_frame_doc,
             "decode_float32_frame(frame, max_elements, expected_shape)\n--\n\n"
             "(shape, float32 values as a bytearray) of a frame that encode_float32_frame could\n"
             "have made, holding at most max_elements elements and of shape expected_shape unless\n"
             "that is None; None for any other frame, including one the header checks of\n"
             "splitrl.codecs.frame would refuse. A bad run-length payload raises CodecError\n"
             "with the message of the reference.");

static PyObject *decode_float32_frame(PyObject *self, PyObject *args) {
    Py_buffer buffer;
    unsigned long long max_elements;
    PyObject *expected_shape, *shape = NULL, *values = NULL, *result = NULL;
    uint8_t *codes = NULL;
    SplitrlFloat32Frame frame;
    if (!PyArg_ParseTuple(args, "y*KO", &buffer, &max_elements, &expected_shape)) {
        return NULL;
    }
    if (!splitrl_parse_float32_frame(buffer.buf, (size_t)buffer.len, max_elements, &frame)) {
        goto none;
    }
    shape = PyTuple_New(frame.ndim);
    if (shape == NULL) {
        goto done;
    }
    for (int axis = 0; axis < frame.ndim; axis++) {
        PyObject *item = PyLong_FromUnsignedLong(frame.shape[axis]);
        if (item == NULL) {
            goto done;
        }
        PyTuple_SET_ITEM(shape, axis, item);
    }
    if (expected_shape != Py_None) {
        const int same = PyObject_RichCompareBool(shape, expected_shape, Py_EQ);
        if (same < 0) {
            goto done;
        }
        if (!same) {
            goto none;
        }
    }
    codes = PyMem_Malloc(frame.count);
    values = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(frame.count * sizeof(float)));
    if (codes == NULL || values == NULL) {
        if (codes == NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    if (frame.run_length) {
        if (decode_runs(frame.payload, frame.payload_size, frame.bits, frame.count, codes) < 0) {
            goto done;
        }
    } else {
        splitrl_unpack_codes(frame.payload, frame.count, frame.bits, codes);
    }
    splitrl_dequantize((float *)PyByteArray_AS_STRING(values), codes, frame.count, frame.offset,
                       frame.scale, 1 << frame.bits);
    result = PyTuple_Pack(2, shape, values);
    goto done;
none:
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(codes);
    Py_XDECREF(shape);
    Py_XDECREF(values);
    PyBuffer_Release(&buffer);
    return result;
}

static PyMethodDef methods[] = {
    {"run_length_encode", run_length_encode, METH_VARARGS, run_length_encode_doc},
    {"run_length_decode", run_length_decode, METH_VARARGS, run_length_decode_doc},
    {"pack_codes", pack_codes, METH_VARARGS, pack_codes_doc},
    {"unpack_codes", unpack_codes, METH_VARARGS, unpack_codes_doc},
    {"quantize_float32", quantize_float32, METH_VARARGS, quantize_float32_doc},
    {"quantize_uint8", quantize_uint8, METH_VARARGS, quantize_uint8_doc},
    {"dequantize_float32", dequantize_float32, METH_VARARGS, dequantize_float32_doc},
    {"encode_float32_frame", encode_float32_frame, METH_VARARGS, encode_float32_frame_doc},
    {"decode_float32_frame", decode_float32_frame, METH_VARARGS, decode_float32_frame_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "splitrl.codecs._kernels",
    "Compiled kernels of splitrl.codecs (the numpy modules are the reference).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__kernels(void) {
    PyObject *errors = PyImport_ImportModule("splitrl.codecs.errors");
    if (errors == NULL) {
        return NULL;
    }
    codec_error = PyObject_GetAttrString(errors, "CodecError");
    Py_DECREF(errors);
    if (codec_error == NULL) {
        return NULL;
    }
    PyObject *kernels = PyModule_Create(&module);
    if (kernels == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(kernels, "MAX_COUNT", (long)SPLITRL_MAX_COUNT) < 0) {
        Py_DECREF(kernels);
        return NULL;
    }
    return kernels;
}
