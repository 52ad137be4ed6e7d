/* The hot path's loops in C, built where a C compiler is at hand: without it, the same
 * results come from Python (sls_beam.wire, sls_beam.batching).
 *
 * encode_runs(runs, known_keys, tail, max_log_bytes[, keep[, own_groups]]): the
 * wire format's bulk encoder. For each run (a list of logs), each log as a JSON object of string values, joined by
 * commas: the same bytes as sls_beam.wire's Python encoder (the value rules of its
 * docstring; text escaped as orjson escapes it). A run's place holds None, never an
 * exception, when one of its logs is not plain, so that the caller takes the per-log
 * path, which applies and names every rule: a log that is not a non-empty dict; a key
 * that is not an exact str in `known_keys` (the keys already validated; None: no check);
 * a value not of a common type (str or a subclass, written as its characters; exactly
 * int, float, bool, None, dict, list); text that is not UTF-8; a value over 1 MiB of
 * UTF-8; a log longer than `max_log_bytes`; a dict or list that orjson refuses. `tail`
 * (bytes) is JSON written at the end of every log (its `__time__`). With `keep`, it also
 * gives what makes each run's logs again from their wire JSON (see Kinds): what the
 * batcher keeps for a failed record. With `own_groups`, a log's own __topic__, __source__
 * (str values) and __tags__ (a dict: the caller grouped the logs by them) are left out of
 * the wire JSON, and kept with the kinds.
 *
 * group_by(keys, items): the batcher's runs of the logs a source callable named.
 *
 * element_runs(elements): the runs of elements the batcher's bulk lane takes as they come,
 * of those that name their own topic, source or tags, and of the others.
 *
 * group_by_fields(logs, topics, sources, tags[, own]): the batcher's runs of logs whose
 * group is their own fields' or their callables'.
 *
 * place_runs(open_batches, runs, encoded, kept): the batcher's runs added to their
 * groups' open batches, the common case, a call for all (bind_open_batch first).
 *
 * KeptRun: what encode_runs keeps of a typed run (its wire JSON and kinds).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h> /* T_OBJECT_EX: a slot's member type */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_VALUE_BYTES (1024 * 1024)

static PyObject *orjson_dumps; /* orjson.dumps, for nested dicts and lists */
static PyObject *group_fields[3]; /* "__topic__", "__source__", "__tags__", interned */

typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Buffer;

static int reserve(Buffer *buffer, Py_ssize_t more) {
    if (buffer->size + more <= buffer->capacity) {
        return 0;
    }
    Py_ssize_t capacity = buffer->capacity * 2;
    if (capacity < buffer->size + more) {
        capacity = buffer->size + more;
    }
    char *data = PyMem_Realloc(buffer->data, capacity);
    if (data == NULL) {
        return -1;
    }
    buffer->data = data;
    buffer->capacity = capacity;
    return 0;
}

static int put(Buffer *buffer, const char *text, Py_ssize_t size) {
    if (reserve(buffer, size) < 0) {
        return -1;
    }
    memcpy(buffer->data + buffer->size, text, size);
    buffer->size += size;
    return 0;
}

#define PUT_LITERAL(buffer, text) put((buffer), (text), sizeof(text) - 1)

/* Buffers kept from one call to the next (the GIL serialises calls; a call made while
 * another holds them takes new ones): a new 64 KiB buffer each call cost page faults. */
#define SPARE_BUFFERS 5
#define SPARE_MAX_BYTES (1024 * 1024)
static Buffer spare[SPARE_BUFFERS];

static Buffer take_buffer(int which) {
    Buffer buffer = spare[which];
    spare[which] = (Buffer){NULL, 0, 0};
    buffer.size = 0;
    return buffer;
}

/* Kept for the next call, unless another is kept already or it grew over 1 MiB. */
static void give_back(Buffer *buffer, int which) {
    if (spare[which].data == NULL && buffer->capacity <= SPARE_MAX_BYTES) {
        spare[which] = *buffer;
    } else {
        PyMem_Free(buffer->data);
    }
    *buffer = (Buffer){NULL, 0, 0};
}

/* How orjson escapes a byte inside a JSON string: 0 = as is, else the escape's
 * second character ('u': \u00XX, lowercase hex). */
static char escapes[256];

/* The bytes of orjson's text where the scan of a nested value has more to do than copy:
 * quotes and backslashes (escaped again in the string that holds the text), brackets. */
static char in_nested_text[256];

static void make_escapes(void) {
    for (int c = 0; c < 0x20; c++) {
        escapes[c] = 'u';
    }
    escapes['\b'] = 'b';
    escapes['\t'] = 't';
    escapes['\n'] = 'n';
    escapes['\f'] = 'f';
    escapes['\r'] = 'r';
    escapes['"'] = '"';
    escapes['\\'] = '\\';
    for (const char *c = "\"\\{}[]"; *c; c++) {
        in_nested_text[(unsigned char)*c] = 1;
    }
}

/* Whether one of 8 bytes needs escaping: under 0x20, a quote or a backslash (exact as a
 * yes or no: the classic "has a byte less than n / equal to c" word tricks). */
static inline int needs_escape(uint64_t word) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t quote = word ^ (ones * '"'), backslash = word ^ (ones * '\\');
    uint64_t found = ((word - ones * 0x20) & ~word) | ((quote - ones) & ~quote) |
                     ((backslash - ones) & ~backslash);
    return (found & highs) != 0;
}

/* UTF-8 `text` escaped as in a JSON string, without quotes. */
static int put_escaped(Buffer *buffer, const unsigned char *text, Py_ssize_t size) {
    static const char hex[] = "0123456789abcdef";
    /* At most 6 bytes an input byte: reserve once, write without checks. */
    if (reserve(buffer, size * 6) < 0) {
        return -1;
    }
    char *out = buffer->data + buffer->size;
    Py_ssize_t start = 0, i = 0;
    while (i < size) {
        if (i + 8 <= size) {
            uint64_t word;
            memcpy(&word, text + i, 8);
            if (!needs_escape(word)) {
                i += 8; /* the common case: 8 bytes at a time */
                continue;
            }
        }
        for (Py_ssize_t end = i + 8 < size ? i + 8 : size; i < end; i++) {
            char escape = escapes[text[i]];
            if (escape == 0) {
                continue;
            }
            memcpy(out, text + start, i - start);
            out += i - start;
            start = i + 1;
            *out++ = '\\';
            *out++ = escape;
            if (escape == 'u') {
                *out++ = '0';
                *out++ = '0';
                *out++ = hex[text[i] >> 4];
                *out++ = hex[text[i] & 0xf];
            }
        }
    }
    memcpy(out, text + start, size - start);
    out += size - start;
    buffer->size = out - buffer->data;
    return 0;
}

/* An exact str as a JSON string (quoted); 1: not UTF-8 or over max_bytes. */
static int put_str(Buffer *buffer, PyObject *text, Py_ssize_t max_bytes) {
    PyObject *utf8 = NULL;
    const char *data;
    Py_ssize_t size;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) {
        return -1;
    }
#endif
    if (PyUnicode_IS_ASCII(text)) {
        data = (const char *)PyUnicode_DATA(text);
        size = PyUnicode_GET_LENGTH(text);
    } else {
        /* A copy, not the str's own cached UTF-8, which would live as long as the log. */
        utf8 = PyUnicode_AsUTF8String(text);
        if (utf8 == NULL) {
            PyErr_Clear(); /* a lone surrogate: the per-log path names the field */
            return 1;
        }
        data = PyBytes_AS_STRING(utf8);
        size = PyBytes_GET_SIZE(utf8);
    }
    int result = 1;
    if (size <= max_bytes) {
        result = -1;
        if (PUT_LITERAL(buffer, "\"") == 0 &&
            put_escaped(buffer, (const unsigned char *)data, size) == 0 &&
            PUT_LITERAL(buffer, "\"") == 0) {
            result = 0;
        }
    }
    Py_XDECREF(utf8);
    return result;
}

/* Text known to need no escaping, as a JSON string. */
static int put_quoted(Buffer *buffer, const char *text, Py_ssize_t size) {
    if (reserve(buffer, size + 2) < 0) {
        return -1;
    }
    buffer->data[buffer->size++] = '"';
    memcpy(buffer->data + buffer->size, text, size);
    buffer->size += size;
    buffer->data[buffer->size++] = '"';
    return 0;
}

static int put_int(Buffer *buffer, PyObject *value) {
    int overflow;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (!overflow) { /* its digits, written from the last (snprintf costs several times more) */
        char digits[24];
        char *start = digits + sizeof digits;
        unsigned long long magnitude =
            number < 0 ? 0ULL - (unsigned long long)number : (unsigned long long)number;
        do {
            *--start = (char)('0' + magnitude % 10);
            magnitude /= 10;
        } while (magnitude != 0);
        if (number < 0) {
            *--start = '-';
        }
        return put_quoted(buffer, start, digits + sizeof digits - start);
    }
    PyObject *text = PyObject_Str(value);
    if (text == NULL) {
        PyErr_Clear(); /* past Python's digit limit: the per-log path writes it */
        return 1;
    }
    int result = put_quoted(buffer, PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text));
    Py_DECREF(text);
    return result;
}

/* Values written by one orjson call each kind once the logs of every run have been passed
 * over, and read back in order: finite floats (orjson's text is repr's, but for exponents
 * and values under 1e-4), dicts and lists (their JSON text), and with own_groups the logs'
 * own tags; a call a value costs more than the rest. The pass leaves a hole (see Hole)
 * where each one's text goes, so that it reads each log once (a first pass to gather them
 * cost a sixth of a typed log's encoding). */
typedef struct {
    PyObject *values; /* in the order of their holes */
    PyObject *json;   /* orjson's text of the list of them; NULL: none */
    const char *next; /* where the next one's text starts */
    Py_ssize_t index; /* which one comes next */
} Written;

enum { FLOAT_HOLE, NESTED_HOLE, TAGS_HOLE };

/* A place in the text the pass wrote where a value's text goes, once orjson has written it. */
typedef struct {
    Py_ssize_t at;
    int kind; /* FLOAT_HOLE, NESTED_HOLE (in the wire JSON), TAGS_HOLE (in the kinds') */
} Hole;

typedef struct {
    Written floats, nested, tags;
    Buffer holes;     /* Hole: in the wire JSON, in order */
    Buffer own_holes; /* Hole: in the JSON of the fields left out (own_groups), in order */
    Buffer log_ends;  /* Py_ssize_t: where each log's JSON ends in the wire JSON */
    int own_groups;   /* the logs' own __topic__, __source__, __tags__ set their group */
} Deferred;

#define HOLES(buffer) ((const Hole *)(buffer).data)
#define COUNT_OF(buffer, type) ((buffer).size / (Py_ssize_t)sizeof(type))

/* `value` written later, at the end of `text`: 0, or -1 (no memory). */
static int defer(Written *written, Buffer *holes, int kind, const Buffer *text, PyObject *value) {
    Hole hole = {text->size, kind};
    if (PyList_Append(written->values, value) < 0) {
        return -1;
    }
    return put(holes, (const char *)&hole, sizeof hole);
}

/* orjson's text of the values (none: nothing to write); 1: orjson refused one (keys that
 * are not str, values it does not know). */
static int write_all(Written *written) {
    if (PyList_GET_SIZE(written->values) == 0) {
        return 0;
    }
    written->json = PyObject_CallOneArg(orjson_dumps, written->values);
    if (written->json == NULL) {
        PyErr_Clear();
        return 1;
    }
    written->next = PyBytes_AS_STRING(written->json) + 1; /* after '[' */
    return 0;
}

static void forget_deferred(Deferred *deferred) {
    Written *all[] = {&deferred->floats, &deferred->nested, &deferred->tags};
    for (int kind = 0; kind < 3; kind++) {
        Py_XDECREF(all[kind]->values);
        Py_XDECREF(all[kind]->json);
    }
    give_back(&deferred->holes, 3);
    give_back(&deferred->log_ends, 4);
    PyMem_Free(deferred->own_holes.data); /* only logs naming their own tags use it */
}

/* Where a float's text ends (orjson's JSON: at the comma or bracket after it). */
static const char *float_end(const char *text) {
    while (*text != ',' && *text != ']') {
        text++;
    }
    return text;
}

/* Where a dict's or list's text ends: where its first bracket closes, outside strings
 * (orjson's JSON is valid). */
static const char *nested_end(const char *text) {
    int depth = 0, in_string = 0;
    do {
        char c = *text++;
        if (in_string) {
            if (c == '\\') {
                text++;
            } else if (c == '"') {
                in_string = 0;
            }
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    } while (depth > 0);
    return text;
}

/* Past the values of the runs before (some not written: not plain), to value `index`. */
static void skip_to(Written *written, Py_ssize_t index, const char *(*end_of)(const char *)) {
    while (written->index < index) {
        written->next = end_of(written->next) + 1;
        written->index++;
    }
}

/* The next float's text, as repr() writes it: orjson's where it is the same, else
 * CPython's own. */
static int put_finite(Buffer *buffer, Written *floats) {
    PyObject *value = PyList_GET_ITEM(floats->values, floats->index);
    const char *text = floats->next, *end = float_end(text);
    floats->index++;
    floats->next = end + 1;
    int exponent = memchr(text, 'e', end - text) != NULL;
    const char *digits = text + (*text == '-');
    if (!exponent && strncmp(digits, "0.0000", 6) != 0) {
        return put_quoted(buffer, text, end - text);
    }
    /* repr: the shortest text that reads back as the same float (slower). */
    char *repr = PyOS_double_to_string(PyFloat_AS_DOUBLE(value), 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (repr == NULL) {
        return -1;
    }
    int result = put_quoted(buffer, repr, (Py_ssize_t)strlen(repr));
    PyMem_Free(repr);
    return result;
}

/* The next dict or list as its JSON text (orjson's), in a JSON string: found where it ends
 * and escaped in one pass (orjson's text holds no control character: it escapes them);
 * 1: over 1 MiB. */
static int put_nested(Buffer *buffer, Written *nested) {
    const char *text = nested->next;
    nested->index++;
    /* At most twice its text written, and its quotes: reserved once, written without checks.
     * Its text is at most what is left of the nested values' (in a bundle of a few runs, a
     * few KiB); where over 1 MiB is left, its own end is found first (a longer value is
     * refused: the run is not plain). */
    const char *json_end = PyBytes_AS_STRING(nested->json) + PyBytes_GET_SIZE(nested->json);
    Py_ssize_t most = json_end - text;
    if (most > MAX_VALUE_BYTES) {
        most = nested_end(text) - text;
        if (most > MAX_VALUE_BYTES) {
            nested->next = text + most + 1;
            return 1;
        }
    }
    if (reserve(buffer, 2 * most + 2) < 0) {
        return -1;
    }
    char *out = buffer->data + buffer->size;
    *out++ = '"';
    const unsigned char *next = (const unsigned char *)text;
    int depth = 0, in_string = 0;
    do {
        unsigned char c = *next++;
        if (!in_nested_text[c]) {
            *out++ = (char)c;
        } else if (c == '"') {
            *out++ = '\\';
            *out++ = '"';
            in_string = !in_string;
        } else if (c == '\\') { /* in a string: it and the character it escapes */
            unsigned char escaped = *next++;
            *out++ = '\\';
            *out++ = '\\';
            if (escaped == '"' || escaped == '\\') {
                *out++ = '\\';
            }
            *out++ = (char)escaped;
        } else {
            *out++ = (char)c;
            if (!in_string) {
                depth += c == '{' || c == '[' ? 1 : -1;
            }
        }
    } while (depth > 0);
    const char *end = (const char *)next;
    nested->next = end + 1; /* after the comma */
    *out++ = '"';
    buffer->size = out - buffer->data;
    return 0;
}

/* The next tags' JSON text as it is (kept with the kinds, not sent). */
static int put_tags(Buffer *buffer, Written *tags) {
    const char *text = tags->next, *end = nested_end(text);
    tags->index++;
    tags->next = end + 1;
    return put(buffer, text, end - text);
}

/* `source`'s text from `*at` to `end`, its holes up to `end` filled (`*hole` onwards);
 * 0, 1 (a nested value over 1 MiB: not plain), -1 (no memory). */
static int fill(Buffer *out, const char *source, Py_ssize_t *at, Py_ssize_t end,
                const Hole **hole, const Hole *last_hole, Deferred *deferred) {
    for (; *hole < last_hole && (*hole)->at <= end; (*hole)++) {
        if (put(out, source + *at, (*hole)->at - *at) < 0) {
            return -1;
        }
        *at = (*hole)->at;
        int kind = (*hole)->kind, result =
            kind == FLOAT_HOLE    ? put_finite(out, &deferred->floats)
            : kind == NESTED_HOLE ? put_nested(out, &deferred->nested)
                                  : put_tags(out, &deferred->tags);
        if (result != 0) {
            return result;
        }
    }
    int result = put(out, source + *at, end - *at);
    *at = end;
    return result;
}

static int put_float(Buffer *buffer, PyObject *number, Deferred *deferred) {
    double value = PyFloat_AS_DOUBLE(number);
    if (isfinite(value)) {
        return defer(&deferred->floats, &deferred->holes, FLOAT_HOLE, buffer, number);
    }
    if (isnan(value)) {
        return PUT_LITERAL(buffer, "\"NaN\"");
    }
    return value > 0 ? PUT_LITERAL(buffer, "\"Infinity\"") : PUT_LITERAL(buffer, "\"-Infinity\"");
}

/* One value as a JSON string, or a hole for it; 0 written, 1 not plain, -1 error (no
 * memory). */
static int put_value(Buffer *buffer, PyObject *value, Deferred *deferred) {
    PyTypeObject *type = Py_TYPE(value);
    if (PyUnicode_Check(value)) { /* a subclass (a str enum) by its characters */
        return put_str(buffer, value, MAX_VALUE_BYTES);
    }
    if (type == &PyBool_Type) {
        return value == Py_True ? PUT_LITERAL(buffer, "\"true\"")
                                : PUT_LITERAL(buffer, "\"false\"");
    }
    if (value == Py_None) {
        return PUT_LITERAL(buffer, "\"null\"");
    }
    if (type == &PyLong_Type) {
        return put_int(buffer, value);
    }
    if (type == &PyFloat_Type) {
        return put_float(buffer, value, deferred);
    }
    if (type == &PyDict_Type || type == &PyList_Type) {
        return defer(&deferred->nested, &deferred->holes, NESTED_HOLE, buffer, value);
    }
    return 1;
}

/* Kinds: what kind each field of a run's logs was, a letter a field, so that a failed
 * log is made again from its wire JSON (sls_beam.wire.logs_from_wire) rather than kept a
 * second time: the wire text of a str, an int, a float (NaN and the infinities too), a
 * bool, None, or an exact dict or list (orjson's text) reads back as the value it was
 * written from. What the batcher keeps for a failed record is then a letter a field, not
 * the logs' own JSON (measured: a fifth of a typed log's encoding, and half the bytes
 * kept). A run whose logs hold anything else (a dict subclass, a str subclass, a dict or
 * list that JSON would not give back, see reads_back) is not kept: the caller packs it. */
typedef struct {
    Buffer letters; /* a letter a field, in each log's order, and ';' after each log */
    Buffer own;     /* the JSON of the fields left out of the wire (own_groups), by commas */
    Py_ssize_t own_fields; /* how many of the run's fields `own` holds so far */
    int faithful;   /* 0: a value of the run would not come back as it was */
    int all_text;   /* every value a str, none left out: the wire JSON is the logs' own */
} Kinds;

#define MAX_FAITHFUL_DEPTH 64

static int container_reads_back(PyObject *value, int depth);

/* Whether a value inside a dict or list reads back from orjson's text as it is: it and
 * what it holds are exact dicts with str keys, lists, str, ints within 64 bits, finite
 * floats, bools and None. */
static inline int reads_back(PyObject *value, int depth) {
    PyTypeObject *type = Py_TYPE(value);
    if (type == &PyUnicode_Type || type == &PyBool_Type || value == Py_None) {
        return 1;
    }
    if (type == &PyLong_Type) {
        int overflow;
        PyLong_AsLongLongAndOverflow(value, &overflow);
        return !overflow;
    }
    if (type == &PyFloat_Type) {
        return isfinite(PyFloat_AS_DOUBLE(value));
    }
    return container_reads_back(value, depth);
}

/* reads_back of a list or dict (else 0). */
static int container_reads_back(PyObject *value, int depth) {
    if (depth >= MAX_FAITHFUL_DEPTH) {
        return 0;
    }
    PyTypeObject *type = Py_TYPE(value);
    if (type == &PyList_Type) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(value); i++) {
            if (!reads_back(PyList_GET_ITEM(value, i), depth + 1)) {
                return 0;
            }
        }
        return 1;
    }
    if (type == &PyDict_Type) {
        Py_ssize_t position = 0;
        PyObject *key, *item;
        while (PyDict_Next(value, &position, &key, &item)) {
            if (!PyUnicode_CheckExact(key) || !reads_back(item, depth + 1)) {
                return 0;
            }
        }
        return 1;
    }
    return 0;
}

/* The letter of a field's value (see Kinds), after it was written to the wire; -1: no
 * memory. */
static int put_kind(Kinds *kinds, PyObject *value) {
    PyTypeObject *type = Py_TYPE(value);
    char kind;
    if (type == &PyUnicode_Type) {
        kind = 's';
    } else if (type == &PyLong_Type) {
        kind = 'i';
    } else if (type == &PyFloat_Type) {
        kind = 'f';
    } else if (type == &PyBool_Type) {
        kind = 'b';
    } else if (value == Py_None) {
        kind = 'n';
    } else if (container_reads_back(value, 0)) {
        kind = 'j';
    } else { /* a str subclass (written as its characters), a dict or list of others */
        kinds->faithful = 0;
        return 0;
    }
    kinds->all_text &= kind == 's';
    return put(&kinds->letters, &kind, 1);
}

/* Which field that sets the log's group `key` is (with `own_groups`: the caller has
 * grouped the logs by them): 1 "__topic__", 2 "__source__", 3 "__tags__"; 0 none. */
static int group_field(PyObject *key) {
    for (int field = 0; field < 3; field++) {
        if (key == group_fields[field]) {
            return field + 1;
        }
    }
    if (!PyUnicode_CheckExact(key) || !PyUnicode_IS_ASCII(key)) {
        return 0;
    }
    Py_ssize_t size = PyUnicode_GET_LENGTH(key);
    const char *text = (const char *)PyUnicode_1BYTE_DATA(key);
    if (size == 9 && memcmp(text, "__topic__", 9) == 0) {
        return 1;
    }
    if (size == 10 && memcmp(text, "__source__", 10) == 0) {
        return 2;
    }
    return size == 8 && memcmp(text, "__tags__", 8) == 0 ? 3 : 0;
}

/* Whether a dict's keys and values are all exact str: the usual tags, which
 * group_by_fields groups by. */
static int str_pairs(PyObject *tags) {
    Py_ssize_t position = 0;
    PyObject *key, *value;
    while (PyDict_Next(tags, &position, &key, &value)) {
        if (!PyUnicode_CheckExact(key) || !PyUnicode_CheckExact(value)) {
            return 0;
        }
    }
    return 1;
}

/* Tags of exact str (see str_pairs) as a JSON object, written here: handed to orjson
 * with the others, their text found again and copied, they cost ~300 instructions a log
 * more. 0 written, 1 a lone surrogate (nothing written: orjson refuses them as before),
 * -1 no memory. */
static int put_str_tags(Buffer *buffer, PyObject *tags) {
    Py_ssize_t position = 0, start = buffer->size;
    PyObject *key, *value;
    int result = PUT_LITERAL(buffer, "{");
    for (Py_ssize_t pair = 0; result == 0 && PyDict_Next(tags, &position, &key, &value); pair++) {
        if (pair > 0) {
            result = PUT_LITERAL(buffer, ",");
        }
        if (result == 0) {
            result = put_str(buffer, key, PY_SSIZE_T_MAX);
        }
        if (result == 0) {
            result = PUT_LITERAL(buffer, ":");
        }
        if (result == 0) {
            result = put_str(buffer, value, PY_SSIZE_T_MAX);
        }
    }
    if (result == 0) {
        result = PUT_LITERAL(buffer, "}");
    }
    if (result == 1) {
        buffer->size = start;
    }
    return result;
}

/* A field that sets the log's group (`field`, see group_field): not sent, but its letter
 * ('T', 'S' or 'G') and its JSON kept in `kinds` (unless NULL). A topic or source must be
 * a str, tags an exact dict (else the log is not plain: 1); -1: no memory. */
static int put_group_field(Kinds *kinds, Deferred *deferred, int field, PyObject *value) {
    int str_tags = 0;
    if (field == 3) { /* tags: written here where all str, else orjson's text after the pass */
        if (!PyDict_CheckExact(value)) {
            return 1;
        }
        str_tags = kinds != NULL && str_pairs(value); /* only kept tags are written here */
        if (kinds != NULL && !str_tags && !container_reads_back(value, 0)) {
            kinds->faithful = 0;
            kinds = NULL;
        }
    } else if (!PyUnicode_CheckExact(value)) {
        return 1;
    }
    if (kinds == NULL) { /* not kept; but orjson takes tags all the same (it refuses some) */
        return field == 3 ? PyList_Append(deferred->tags.values, value) : 0;
    }
    kinds->all_text = 0;
    char letter = "TSG"[field - 1];
    int result = put(&kinds->letters, &letter, 1);
    if (result == 0 && kinds->own_fields++ > 0) { /* (tags may be a hole: no size yet) */
        result = PUT_LITERAL(&kinds->own, ",");
    }
    if (result == 0 && field == 3) {
        result = str_tags ? put_str_tags(&kinds->own, value) : 1;
        if (result == 1) {
            result = defer(&deferred->tags, &deferred->own_holes, TAGS_HOLE, &kinds->own, value);
        }
    } else if (result == 0) {
        result = put_str(&kinds->own, value, MAX_VALUE_BYTES);
    }
    return result;
}

/* The text `"key":` (after a comma, but for the first) of the key last seen at each of a
 * log's first places: logs of a run mostly share their keys, the same str objects, so
 * a key seen there is neither looked up in known_keys nor escaped again. */
#define REMEMBERED_PLACES 32
#define REMEMBERED_TEXT 160

typedef struct {
    PyObject *key; /* a strong reference (its address is compared), or NULL */
    Py_ssize_t size;
    char text[REMEMBERED_TEXT];
} KeyText;

static void forget_keys(KeyText *keys) {
    for (int place = 0; place < REMEMBERED_PLACES; place++) {
        Py_CLEAR(keys[place].key);
    }
}

/* A log's field name, with the comma before it; 0 written, 1 not plain, -1 error. */
static int put_key(Buffer *buffer, PyObject *key, Py_ssize_t place, PyObject *known_keys,
                   KeyText *keys) {
    KeyText *seen = place < REMEMBERED_PLACES ? &keys[place] : NULL;
    if (seen != NULL && seen->key == key) {
        return put(buffer, seen->text, seen->size);
    }
    if (!PyUnicode_CheckExact(key)) {
        return 1;
    }
    if (known_keys != Py_None) {
        int known = PySet_Contains(known_keys, key);
        if (known != 1) {
            PyErr_Clear();
            return 1;
        }
    }
    Py_ssize_t start = buffer->size;
    int result = place > 0 ? PUT_LITERAL(buffer, ",") : 0;
    if (result == 0) {
        result = put_str(buffer, key, PY_SSIZE_T_MAX);
    }
    if (result == 0) {
        result = PUT_LITERAL(buffer, ":");
    }
    Py_ssize_t size = buffer->size - start;
    if (result == 0 && seen != NULL && size <= REMEMBERED_TEXT) {
        Py_INCREF(key);
        Py_XSETREF(seen->key, key);
        memcpy(seen->text, buffer->data + start, size);
        seen->size = size;
    }
    return result;
}

/* One log as a JSON object, with holes where its floats and nested values go (see
 * Written), and its fields' letters in `kinds`, unless NULL; 0 written, 1 not plain, -1
 * error. */
static int put_log(Buffer *buffer, Kinds *kinds, PyObject *log, PyObject *known_keys,
                   KeyText *keys, Deferred *deferred, const char *tail, Py_ssize_t tail_size) {
    /* A dict subclass is read as a dict, as orjson and the Python encoder read it. */
    if (!PyDict_Check(log) || PyDict_GET_SIZE(log) == 0) {
        return 1;
    }
    if (kinds != NULL && !PyDict_CheckExact(log)) {
        kinds->faithful = 0; /* it would come back as a dict */
    }
    if (kinds != NULL && !kinds->faithful) {
        kinds = NULL;
    }
    if (PUT_LITERAL(buffer, "{") < 0) {
        return -1;
    }
    /* Fields sent: all but those that set the log's group (with own_groups). */
    Py_ssize_t position = 0, place = 0;
    PyObject *key, *value;
    while (PyDict_Next(log, &position, &key, &value)) {
        /* Held while written (a str of a big int is made, a value deferred). */
        Py_INCREF(key);
        Py_INCREF(value);
        /* A key sent at this place before is not one that sets the log's group. */
        int result, field = 0;
        if (deferred->own_groups && (place >= REMEMBERED_PLACES || keys[place].key != key)) {
            field = group_field(key);
        }
        if (field) {
            Kinds *kept_kinds = kinds && kinds->faithful ? kinds : NULL;
            result = put_group_field(kept_kinds, deferred, field, value);
        } else {
            result = put_key(buffer, key, place, known_keys, keys);
            if (result == 0) {
                result = put_value(buffer, value, deferred);
            }
            if (result == 0 && kinds != NULL && kinds->faithful) {
                result = put_kind(kinds, value);
            }
            place++;
        }
        Py_DECREF(key);
        Py_DECREF(value);
        if (result != 0) {
            return result;
        }
    }
    if (place == 0) { /* only the fields that set its group: no field to send */
        return 1;
    }
    if (put(buffer, tail, tail_size) < 0 || PUT_LITERAL(buffer, "}") < 0 ||
        (kinds && PUT_LITERAL(&kinds->letters, ";") < 0)) {
        return -1;
    }
    return 0;
}

/* One run's logs joined by commas into `buffer`, where each ends noted (their letters in
 * `kinds`, unless NULL); 0 written, 1 not plain, -1 error. A log is held to max_log_bytes
 * here without its holes' text (a longer one is not written further), and with it once
 * they are filled (splice_run). */
static int put_run(Buffer *buffer, Kinds *kinds, PyObject *logs, PyObject *known_keys,
                   KeyText *keys, Deferred *deferred, const char *tail, Py_ssize_t tail_size,
                   Py_ssize_t max_log_bytes) {
    int result = 0;
    /* The list may change while a value is written (user code): index it each time. */
    for (Py_ssize_t i = 0; result == 0 && i < PyList_GET_SIZE(logs); i++) {
        Py_ssize_t start = buffer->size + (i > 0);
        if (i > 0 && PUT_LITERAL(buffer, ",") < 0) {
            return -1;
        }
        PyObject *log = PyList_GET_ITEM(logs, i);
        Py_INCREF(log);
        result = put_log(buffer, kinds, log, known_keys, keys, deferred, tail, tail_size);
        Py_DECREF(log);
        if (result == 0 && buffer->size - start > max_log_bytes) {
            result = 1; /* even before its holes are filled */
        }
        if (result == 0) {
            Py_ssize_t end = buffer->size;
            result = put(&deferred->log_ends, (const char *)&end, sizeof end);
        }
    }
    return result;
}

static PyObject *encode(PyObject *runs, PyObject *known_keys, PyObject *tail_bytes,
                        Py_ssize_t max_log_bytes, int own_groups, PyObject **kept);

/* Each run on its own (orjson refused a nested value of one of them). */
static PyObject *encode_each(PyObject *runs, PyObject *known_keys, PyObject *tail,
                             Py_ssize_t max_log_bytes, int own_groups, PyObject **kept) {
    Py_ssize_t count = PyList_GET_SIZE(runs);
    PyObject *results = PyList_New(count);
    for (Py_ssize_t r = 0; results != NULL && r < count; r++) {
        PyObject *one = PyList_New(1), *encoded = NULL, *kept_one = NULL;
        if (one != NULL) {
            PyList_SET_ITEM(one, 0, Py_NewRef(PyList_GET_ITEM(runs, r)));
            encoded = encode(one, known_keys, tail, max_log_bytes, own_groups,
                             kept ? &kept_one : NULL);
        }
        Py_XDECREF(one);
        if (encoded == NULL) {
            Py_CLEAR(results);
            break;
        }
        PyList_SET_ITEM(results, r, Py_NewRef(PyList_GET_ITEM(encoded, 0)));
        if (kept != NULL) {
            PyList_SetItem(*kept, r, Py_NewRef(PyList_GET_ITEM(kept_one, 0)));
            Py_DECREF(kept_one);
        }
        Py_DECREF(encoded);
    }
    return results;
}

/* KeptRun: a typed run's wire JSON and its kinds, what the batcher keeps of it while its
 * batch waits. Not a tuple: a tuple is a container, which the garbage collector counts
 * from its making to its freeing, and a source per element keeps ~16 runs a handover
 * alive until their batches close: the collector's youngest generation ran three times
 * as often for them. Both fields are exact bytes, which refer to nothing: no cycle can
 * pass through a KeptRun, so the collector need not know it. */
typedef struct {
    PyObject_HEAD
    PyObject *wire;  /* the run's logs' wire JSON, joined by commas */
    PyObject *kinds; /* a letter a field, and after a NUL the JSON of fields left out */
} KeptRunObject;

static PyTypeObject KeptRun_Type;

static PyObject *kept_run(PyObject *wire, PyObject *kinds) {
    KeptRunObject *kept = PyObject_New(KeptRunObject, &KeptRun_Type);
    if (kept != NULL) {
        kept->wire = Py_NewRef(wire);
        kept->kinds = Py_NewRef(kinds);
    }
    return (PyObject *)kept;
}

static PyObject *kept_run_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"wire", "kinds", NULL};
    PyObject *wire, *kinds;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "SS:KeptRun", names, &wire, &kinds)) {
        return NULL;
    }
    if (!PyBytes_CheckExact(wire) || !PyBytes_CheckExact(kinds)) {
        PyErr_SetString(PyExc_TypeError, "KeptRun takes bytes, not a subclass");
        return NULL;
    }
    return kept_run(wire, kinds);
}

static void kept_run_dealloc(KeptRunObject *kept) {
    Py_DECREF(kept->wire);
    Py_DECREF(kept->kinds);
    Py_TYPE(kept)->tp_free((PyObject *)kept);
}

static PyObject *kept_run_repr(KeptRunObject *kept) {
    return PyUnicode_FromFormat("KeptRun(<%zd bytes of wire JSON>, <%zd bytes of kinds>)",
                                PyBytes_GET_SIZE(kept->wire), PyBytes_GET_SIZE(kept->kinds));
}

static PyMemberDef kept_run_members[] = {
    {"wire", T_OBJECT_EX, offsetof(KeptRunObject, wire), READONLY,
     "The run's logs' wire JSON, joined by commas."},
    {"kinds", T_OBJECT_EX, offsetof(KeptRunObject, kinds), READONLY,
     "A letter a field that says what its wire text was made from, and after a NUL the "
     "JSON of the fields left out of the wire (sls_beam.wire.logs_from_wire)."},
    {NULL},
};

static PyTypeObject KeptRun_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sls_beam._speedups.KeptRun",
    .tp_basicsize = sizeof(KeptRunObject),
    .tp_dealloc = (destructor)kept_run_dealloc,
    .tp_repr = (reprfunc)kept_run_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "KeptRun(wire, kinds)\n\nWhat is kept of a typed run while its batch waits: "
              "its wire JSON and its kinds, from which its logs are made again for a "
              "failed record. Not tracked by the garbage collector.",
    .tp_members = kept_run_members,
    .tp_new = kept_run_new,
};

/* What is kept of a run for its failed logs (see Kinds): its wire JSON itself where that
 * is the logs' own (every value a str, none left out, no tail), else a KeptRun of its
 * wire JSON and its kinds: the letters, and after a NUL the JSON of the fields left out
 * of the wire. */
static PyObject *kept_of(int all_text, const Buffer *letters, const Buffer *own,
                         PyObject *encoded, Py_ssize_t tail_size) {
    if (all_text && tail_size == 0) {
        return Py_NewRef(encoded);
    }
    PyObject *text =
        PyBytes_FromStringAndSize(NULL, letters->size + (own->size > 0 ? 1 + own->size : 0));
    if (text == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(text);
    memcpy(out, letters->data, letters->size);
    if (own->size > 0) {
        out[letters->size] = '\0';
        memcpy(out + letters->size + 1, own->data, own->size);
    }
    PyObject *kept = kept_run(encoded, text);
    Py_DECREF(text);
    return kept;
}

/* Where a run's part of the pass ends in each text it wrote (it starts where the run
 * before's ends), and what the pass found of it. */
typedef struct {
    Py_ssize_t wire, letters, own;            /* bytes */
    Py_ssize_t log_ends, holes, own_holes;    /* entries */
    Py_ssize_t values[3];                     /* floats, nested values, tags deferred */
    int written;                              /* 0: written; 1: not plain */
    int faithful, all_text;                   /* as in Kinds */
} RunEnds;

static RunEnds ends_of(const Buffer *wire, const Kinds *kinds, const Deferred *deferred,
                       int written) {
    return (RunEnds){
        wire->size,
        kinds->letters.size,
        kinds->own.size,
        COUNT_OF(deferred->log_ends, Py_ssize_t),
        COUNT_OF(deferred->holes, Hole),
        COUNT_OF(deferred->own_holes, Hole),
        {PyList_GET_SIZE(deferred->floats.values), PyList_GET_SIZE(deferred->nested.values),
         PyList_GET_SIZE(deferred->tags.values)},
        written,
        kinds->faithful,
        kinds->all_text,
    };
}

/* A run's wire JSON into `out`: the pass's text, from `from` to `to`, its holes filled; 0,
 * 1 (a log over max_log_bytes, or a nested value over 1 MiB: not plain), -1 (no memory). */
static int splice_run(Buffer *out, const Buffer *wire, const RunEnds *from, const RunEnds *to,
                      Deferred *deferred, Py_ssize_t max_log_bytes) {
    const Hole *hole = HOLES(deferred->holes) + from->holes;
    const Hole *last_hole = HOLES(deferred->holes) + to->holes;
    const Py_ssize_t *log_ends = (const Py_ssize_t *)deferred->log_ends.data;
    Py_ssize_t at = from->wire;
    out->size = 0;
    for (Py_ssize_t log = from->log_ends; log < to->log_ends; log++) {
        Py_ssize_t start = out->size + (at > from->wire); /* after the comma before it */
        int result = fill(out, wire->data, &at, log_ends[log], &hole, last_hole, deferred);
        if (result != 0) {
            return result;
        }
        if (out->size - start > max_log_bytes) {
            return 1;
        }
    }
    return 0;
}

/* The JSON of a run's fields left out of the wire (own_groups) into `out`, its tags
 * filled in; 0, or -1 (no memory). */
static int splice_own(Buffer *out, const Buffer *own, const RunEnds *from, const RunEnds *to,
                      Deferred *deferred) {
    const Hole *hole = HOLES(deferred->own_holes) + from->own_holes;
    Py_ssize_t at = from->own;
    out->size = 0;
    return fill(out, own->data, &at, to->own, &hole, HOLES(deferred->own_holes) + to->own_holes,
                deferred);
}

/* encode_runs' work: the list of each run's wire JSON (or None), and where `kept` is not
 * NULL, a new list of what is kept of each run (see kept_of; None where it is not) in
 * *kept. One pass over the logs writes them, with holes for their floats and nested
 * values (see Written); then orjson writes those, a call each kind for all runs; then
 * each run's text is made with its holes filled. */
static PyObject *encode(PyObject *runs, PyObject *known_keys, PyObject *tail_bytes,
                        Py_ssize_t max_log_bytes, int own_groups, PyObject **kept) {
    const char *tail = PyBytes_AS_STRING(tail_bytes);
    Py_ssize_t tail_size = PyBytes_GET_SIZE(tail_bytes);
    Py_ssize_t count = PyList_GET_SIZE(runs);
    RunEnds *ends = PyMem_Malloc(sizeof(RunEnds) * (count + 1)); /* ends[0]: the start */
    PyObject *results = PyList_New(count);
    Buffer buffer = take_buffer(0), out = take_buffer(2);
    Kinds kinds = {take_buffer(1), {NULL, 0, 0}, 0, 1, 1};
    Deferred deferred = {{PyList_New(0), NULL, NULL, 0},
                         {PyList_New(0), NULL, NULL, 0},
                         {PyList_New(0), NULL, NULL, 0},
                         take_buffer(3),
                         {NULL, 0, 0},
                         take_buffer(4),
                         own_groups};
    KeyText keys[REMEMBERED_PLACES] = {{NULL, 0, {0}}};
    int result = -1;
    if (kept != NULL) {
        *kept = PyList_New(count);
        for (Py_ssize_t r = 0; *kept != NULL && r < count; r++) {
            PyList_SET_ITEM(*kept, r, Py_NewRef(Py_None));
        }
    }
    if (ends != NULL && results != NULL && (kept == NULL || *kept != NULL) &&
        deferred.floats.values != NULL && deferred.nested.values != NULL &&
        deferred.tags.values != NULL && reserve(&buffer, 64 * 1024) == 0 &&
        (kept == NULL || reserve(&kinds.letters, 4 * 1024) == 0)) {
        result = 0;
        ends[0] = ends_of(&buffer, &kinds, &deferred, 0);
        for (Py_ssize_t r = 0; r < count; r++) {
            kinds.own_fields = 0;
            kinds.faithful = kinds.all_text = 1;
            int written = put_run(&buffer, kept ? &kinds : NULL, PyList_GET_ITEM(runs, r),
                                  known_keys, keys, &deferred, tail, tail_size, max_log_bytes);
            if (written < 0) {
                result = -1;
                break;
            }
            ends[r + 1] = ends_of(&buffer, &kinds, &deferred, written);
        }
    }
    if (result == 0) {
        result = write_all(&deferred.floats) || write_all(&deferred.nested) ||
                 write_all(&deferred.tags);
    }
    if (result == 1 && count > 1) {
        Py_DECREF(results);
        results = encode_each(runs, known_keys, tail_bytes, max_log_bytes, own_groups, kept);
        result = results == NULL ? -2 : 2;
    }
    for (Py_ssize_t r = 0; result == 0 && r < count; r++) {
        const RunEnds *from = &ends[r], *to = &ends[r + 1];
        PyObject *encoded = Py_None;
        int spliced = to->written;
        if (spliced == 0) {
            skip_to(&deferred.floats, from->values[0], float_end);
            skip_to(&deferred.nested, from->values[1], nested_end);
            skip_to(&deferred.tags, from->values[2], nested_end);
            spliced = splice_run(&out, &buffer, from, to, &deferred, max_log_bytes);
        }
        if (spliced == 0) {
            encoded = PyBytes_FromStringAndSize(out.data, out.size);
            if (encoded != NULL && kept != NULL && to->faithful) {
                Buffer letters = {kinds.letters.data + from->letters, to->letters - from->letters,
                                  0};
                PyObject *kept_run = NULL;
                if (splice_own(&out, &kinds.own, from, to, &deferred) == 0) {
                    kept_run = kept_of(to->all_text, &letters, &out, encoded, tail_size);
                }
                if (kept_run == NULL) {
                    Py_CLEAR(encoded);
                } else {
                    PyList_SetItem(*kept, r, kept_run);
                }
            }
            if (encoded == NULL) {
                spliced = -1;
            }
        }
        if (spliced < 0) {
            result = -1;
            break;
        }
        PyList_SET_ITEM(results, r, encoded == Py_None ? Py_NewRef(Py_None) : encoded);
    }
    if (result == 1) { /* the only run: orjson refused one of its nested values */
        for (Py_ssize_t r = 0; r < count; r++) {
            PyList_SET_ITEM(results, r, Py_NewRef(Py_None));
        }
        result = 0;
    }
    if (result < 0) {
        if (result == -1 && !PyErr_Occurred()) {
            PyErr_NoMemory();
        }
        Py_CLEAR(results);
        if (kept != NULL) {
            Py_CLEAR(*kept);
        }
    }
    PyMem_Free(ends);
    give_back(&buffer, 0);
    give_back(&kinds.letters, 1);
    give_back(&out, 2);
    PyMem_Free(kinds.own.data); /* only logs naming their own group fields use it */
    forget_keys(keys);
    forget_deferred(&deferred);
    return results;
}

static PyObject *encode_runs(PyObject *module, PyObject *args) {
    PyObject *runs, *known_keys, *tail_bytes;
    Py_ssize_t max_log_bytes;
    int keep = 0, own_groups = 0;
    if (!PyArg_ParseTuple(args, "O!OO!n|pp:encode_runs", &PyList_Type, &runs, &known_keys,
                          &PyBytes_Type, &tail_bytes, &max_log_bytes, &keep, &own_groups)) {
        return NULL;
    }
    if (known_keys != Py_None && !PyAnySet_Check(known_keys)) {
        PyErr_SetString(PyExc_TypeError, "known_keys must be a set or None");
        return NULL;
    }
    for (Py_ssize_t r = 0; r < PyList_GET_SIZE(runs); r++) {
        if (!PyList_Check(PyList_GET_ITEM(runs, r))) {
            PyErr_SetString(PyExc_TypeError, "each run must be a list");
            return NULL;
        }
    }
    if (!keep) {
        return encode(runs, known_keys, tail_bytes, max_log_bytes, own_groups, NULL);
    }
    PyObject *kept = NULL;
    PyObject *encoded = encode(runs, known_keys, tail_bytes, max_log_bytes, own_groups, &kept);
    if (encoded == NULL) {
        return NULL;
    }
    return Py_BuildValue("(NN)", encoded, kept);
}

/* `item` appended to the list of `key` in `groups` (a new list for a new key): that list
 * (borrowed: the dict holds it), or NULL with an exception set (a key's __hash__ or
 * __eq__ may be the user's code). */
static PyObject *add_to_group(PyObject *groups, PyObject *key, PyObject *item) {
    PyObject *group = PyDict_GetItemWithError(groups, key); /* borrowed */
    if (group == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        PyObject *fresh = PyList_New(0);
        int failed = fresh == NULL || PyDict_SetItem(groups, key, fresh) < 0;
        Py_XDECREF(fresh); /* the dict holds it */
        if (failed) {
            return NULL;
        }
        group = fresh;
    }
    return PyList_Append(group, item) < 0 ? NULL : group;
}

/* group_by(keys, items) -> {key: [item, ...]}: the items of each key, in order (the
 * batcher's runs of a source callable's logs). */
static PyObject *group_by(PyObject *module, PyObject *args) {
    PyObject *keys, *items;
    if (!PyArg_ParseTuple(args, "O!O!:group_by", &PyList_Type, &keys, &PyList_Type, &items)) {
        return NULL;
    }
    if (PyList_GET_SIZE(keys) != PyList_GET_SIZE(items)) {
        PyErr_SetString(PyExc_ValueError, "keys and items must be as many");
        return NULL;
    }
    PyObject *groups = PyDict_New();
    /* Indexed each time: a key's __hash__ or __eq__ may be the user's code. */
    for (Py_ssize_t i = 0; groups != NULL && i < PyList_GET_SIZE(keys) &&
                           i < PyList_GET_SIZE(items); i++) {
        PyObject *key = Py_NewRef(PyList_GET_ITEM(keys, i));
        PyObject *item = Py_NewRef(PyList_GET_ITEM(items, i));
        int failed = add_to_group(groups, key, item) == NULL;
        Py_DECREF(key);
        Py_DECREF(item);
        if (failed) {
            Py_CLEAR(groups);
        }
    }
    return groups;
}

/* The kinds of element_runs: what the batcher's bulk lane does with a run of them. */
enum { PLAIN_RUN = 0, OWN_GROUP_RUN = 1, OTHER_RUN = 2 };

/* The kind of one element (see element_runs), or -1 with an exception set. */
static int element_kind(PyObject *element) {
    if (!PyDict_CheckExact(element)) {
        return OTHER_RUN;
    }
    for (int field = 0; field < 3; field++) {
        int has = PyDict_Contains(element, group_fields[field]);
        if (has != 0) {
            return has < 0 ? -1 : OWN_GROUP_RUN;
        }
    }
    return PLAIN_RUN;
}

/* element_runs(elements) -> list[tuple[int, int]]: the runs of elements of one kind, in
 * order, as (kind, end): 0, plain (exactly dicts that name no group field of their own:
 * __topic__, __source__, __tags__); 1, exactly dicts that name one; 2, the others. */
static PyObject *element_runs(PyObject *module, PyObject *elements) {
    if (!PyList_Check(elements)) {
        PyErr_SetString(PyExc_TypeError, "element_runs takes a list");
        return NULL;
    }
    PyObject *runs = PyList_New(0);
    int kind = -1;
    Py_ssize_t index = 0;
    for (; runs != NULL && index < PyList_GET_SIZE(elements); index++) {
        /* Held: a key's __eq__ (the user's, in a dict with a colliding hash) may change
         * the list. */
        PyObject *element = Py_NewRef(PyList_GET_ITEM(elements, index));
        int this_kind = element_kind(element);
        Py_DECREF(element);
        if (this_kind < 0) {
            Py_CLEAR(runs);
        } else if (this_kind != kind) {
            PyObject *run = kind < 0 ? NULL : Py_BuildValue("(in)", kind, index);
            if (kind >= 0 && (run == NULL || PyList_Append(runs, run) < 0)) {
                Py_CLEAR(runs);
            }
            Py_XDECREF(run);
            kind = this_kind;
        }
    }
    if (runs != NULL && kind >= 0) {
        PyObject *run = Py_BuildValue("(in)", kind, index);
        if (run == NULL || PyList_Append(runs, run) < 0) {
            Py_CLEAR(runs);
        }
        Py_XDECREF(run);
    }
    return runs;
}

/* Tags (a log's own, or a tags callable's) as part of a key to group by: their (key,
 * value) pairs, in order, where `tags` is an exact dict of exact str; else NULL, no
 * exception set: the caller takes the log one by one (values that compare equal but are
 * written differently, 1 and True, must not share a group). NULL with an exception set:
 * no memory. */
static PyObject *tag_pairs(PyObject *tags) {
    if (!PyDict_CheckExact(tags)) {
        return NULL;
    }
    PyObject *pairs = PyTuple_New(PyDict_GET_SIZE(tags));
    Py_ssize_t position = 0, index = 0;
    PyObject *key, *value;
    while (pairs != NULL && PyDict_Next(tags, &position, &key, &value)) {
        if (!PyUnicode_CheckExact(key) || !PyUnicode_CheckExact(value) ||
            index >= PyTuple_GET_SIZE(pairs)) {
            Py_DECREF(pairs);
            return NULL;
        }
        PyObject *pair = PyTuple_Pack(2, key, value);
        if (pair == NULL) {
            Py_CLEAR(pairs);
        } else {
            PyTuple_SET_ITEM(pairs, index++, pair);
        }
    }
    return pairs;
}

/* What a callable gave for log `index` (a borrowed reference), or NULL where `values` is
 * None (the option is not a callable). */
static PyObject *called_value(PyObject *values, Py_ssize_t index) {
    return values == Py_None || index >= PyList_GET_SIZE(values) ? NULL
                                                                 : PyList_GET_ITEM(values, index);
}

/* What sets a log's group (see group_by_fields), before any key is made: the topic and
 * the source (str, or Py_None: the configuration's), the callable's and the log's own
 * tags (exact dicts of exact str, or NULL: none), all borrowed; their hash; and the
 * log's own fields, held (a key of the log's own, with a colliding hash, may run user
 * code that changes the log while the others are looked up): release_values drops them. */
typedef struct {
    PyObject *parts[2];
    PyObject *tags[2];
    Py_hash_t hash;
    PyObject *owned[3];
} FieldValues;

static void release_values(FieldValues *values) {
    for (int field = 0; field < 3; field++) {
        Py_CLEAR(values->owned[field]);
    }
}

/* A str's hash folded into `hash` (a str's hash is kept in the str once made). */
static int fold_hash(Py_hash_t *hash, PyObject *text) {
    Py_hash_t h = PyObject_Hash(text);
    if (h == -1) {
        return -1;
    }
    *hash = (*hash ^ h) * 1000003;
    return 0;
}

/* Whether `tags` (a dict) is an exact dict of exact str, its pairs folded into `hash`
 * in order: 1 yes, 0 no (the log is taken one by one), -1 an error. */
static int fold_tags(Py_hash_t *hash, PyObject *tags) {
    if (!PyDict_CheckExact(tags)) {
        return 0;
    }
    Py_ssize_t position = 0;
    PyObject *key, *value;
    *hash = (*hash ^ (PyDict_GET_SIZE(tags) + 1)) * 1000003;
    while (PyDict_Next(tags, &position, &key, &value)) {
        if (!PyUnicode_CheckExact(key) || !PyUnicode_CheckExact(value)) {
            return 0;
        }
        if (fold_hash(hash, key) < 0 || fold_hash(hash, value) < 0) {
            return -1;
        }
    }
    return 1;
}

/* A log's FieldValues (see group_by_fields; `own`: look for its own fields): 1, found;
 * 0, the log is taken one by one; -1, an error. Whatever it returns, the caller releases
 * `found` (release_values). */
static int field_values(PyObject *log, PyObject *topics, PyObject *sources,
                        PyObject *tags_values, Py_ssize_t index, int own,
                        FieldValues *found) {
    PyObject **owned = found->owned;
    owned[0] = owned[1] = owned[2] = NULL;
    if (!PyDict_Check(log)) {
        PyErr_SetString(PyExc_TypeError, "group_by_fields takes dicts");
        return -1;
    }
    for (int field = 0; own && field < 3; field++) {
        owned[field] = Py_XNewRef(PyDict_GetItemWithError(log, group_fields[field]));
        if (owned[field] == NULL && PyErr_Occurred()) {
            return -1;
        }
    }
    found->hash = 0;
    PyObject *called[2] = {called_value(topics, index), called_value(sources, index)};
    for (int field = 0; field < 2; field++) {
        PyObject *value = owned[field] != NULL ? owned[field] : called[field];
        found->parts[field] = Py_None;
        if (value == NULL || (value == Py_None && owned[field] == NULL)) {
            found->hash = (found->hash ^ 1) * 1000003; /* the configuration's, or a callable's None */
            continue;
        }
        if (!PyUnicode_CheckExact(value)) {
            return 0;
        }
        if (fold_hash(&found->hash, value) < 0) {
            return -1;
        }
        found->parts[field] = value;
    }
    PyObject *tags[2] = {called_value(tags_values, index), owned[2]};
    for (int which = 0; which < 2; which++) {
        found->tags[which] = NULL;
        if (tags[which] == NULL || (which == 0 && tags[which] == Py_None)) {
            found->hash = (found->hash ^ 2) * 1000003;
            continue;
        }
        int good = fold_tags(&found->hash, tags[which]);
        if (good <= 0) {
            return good;
        }
        found->tags[which] = tags[which];
    }
    return 1;
}

/* The key of a log's FieldValues (topic, source, called tags' pairs, own tags' pairs):
 * a new reference, or NULL with an exception set. */
static PyObject *fields_key(FieldValues *values) {
    PyObject *pairs[2] = {NULL, NULL};
    for (int which = 0; which < 2; which++) {
        if (values->tags[which] != NULL) {
            pairs[which] = tag_pairs(values->tags[which]);
            if (pairs[which] == NULL) { /* values->tags hold exact str: no memory */
                Py_XDECREF(pairs[0]);
                return NULL;
            }
        }
    }
    PyObject *key = PyTuple_Pack(4, values->parts[0], values->parts[1],
                                 pairs[0] ? pairs[0] : Py_None, pairs[1] ? pairs[1] : Py_None);
    Py_XDECREF(pairs[0]);
    Py_XDECREF(pairs[1]);
    return key;
}

/* Whether two exact str (or Py_None) are the same text. */
static int same_text(PyObject *a, PyObject *b) {
    if (a == b) {
        return 1;
    }
    if (a == Py_None || b == Py_None || PyUnicode_GET_LENGTH(a) != PyUnicode_GET_LENGTH(b) ||
        PyUnicode_KIND(a) != PyUnicode_KIND(b)) {
        return 0;
    }
    return memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b),
                  PyUnicode_GET_LENGTH(a) * PyUnicode_KIND(a)) == 0;
}

/* Whether `tags` (an exact dict of exact str, or NULL) has the pairs of a key (a tuple
 * of pairs, or Py_None), in order. */
static int same_tags(PyObject *tags, PyObject *pairs) {
    if (tags == NULL || pairs == Py_None) {
        return tags == NULL && pairs == Py_None;
    }
    if (PyDict_GET_SIZE(tags) != PyTuple_GET_SIZE(pairs)) {
        return 0;
    }
    Py_ssize_t position = 0, index = 0;
    PyObject *key, *value;
    while (PyDict_Next(tags, &position, &key, &value)) {
        PyObject *pair = PyTuple_GET_ITEM(pairs, index++);
        if (!same_text(key, PyTuple_GET_ITEM(pair, 0)) ||
            !same_text(value, PyTuple_GET_ITEM(pair, 1))) {
            return 0;
        }
    }
    return 1;
}

/* The keys group_by_fields has made, found again without making a key a log: an open
 * addressing table of their hashes, each with its key and list (held: forget_runs drops
 * them). Past KNOWN_KEYS / 2 keys, the others are found through the dict. */
#define KNOWN_KEYS 64

typedef struct {
    Py_hash_t hash;
    PyObject *key; /* NULL: an empty slot */
    PyObject *run;
} KnownKey;

/* The run of a log's FieldValues in the table, or NULL where it has none yet. */
static PyObject *known_run(KnownKey *known, FieldValues *values) {
    for (size_t slot = (size_t)values->hash % KNOWN_KEYS;; slot = (slot + 1) % KNOWN_KEYS) {
        KnownKey *entry = &known[slot];
        if (entry->key == NULL) {
            return NULL;
        }
        if (entry->hash == values->hash &&
            same_text(values->parts[0], PyTuple_GET_ITEM(entry->key, 0)) &&
            same_text(values->parts[1], PyTuple_GET_ITEM(entry->key, 1)) &&
            same_tags(values->tags[0], PyTuple_GET_ITEM(entry->key, 2)) &&
            same_tags(values->tags[1], PyTuple_GET_ITEM(entry->key, 3))) {
            return entry->run;
        }
    }
}

static void remember_run(KnownKey *known, Py_ssize_t *count, Py_hash_t hash, PyObject *key,
                         PyObject *run) {
    if (*count >= KNOWN_KEYS / 2) {
        return;
    }
    size_t slot = (size_t)hash % KNOWN_KEYS;
    while (known[slot].key != NULL) {
        slot = (slot + 1) % KNOWN_KEYS;
    }
    known[slot] = (KnownKey){hash, Py_NewRef(key), Py_NewRef(run)};
    ++*count;
}

static void forget_runs(KnownKey *known) {
    for (int slot = 0; slot < KNOWN_KEYS; slot++) {
        Py_CLEAR(known[slot].key);
        Py_CLEAR(known[slot].run);
    }
}

/* A log of FieldValues `values` put in its group's run: found in `known`, else through
 * its key in `groups` (and remembered). 0, or -1 with an exception set. */
static int add_to_fields_group(PyObject *groups, KnownKey *known, Py_ssize_t *count,
                               FieldValues *values, PyObject *log) {
    PyObject *run = known_run(known, values);
    if (run != NULL) {
        return PyList_Append(run, log);
    }
    PyObject *key = fields_key(values);
    run = key == NULL ? NULL : add_to_group(groups, key, log);
    if (run != NULL) {
        remember_run(known, count, values->hash, key, run);
    }
    Py_XDECREF(key);
    return run == NULL ? -1 : 0;
}

/* group_by_fields(logs, topics, sources, tags, own=True) -> {key: [log, ...]}: dicts
 * grouped by what sets their group, in order: each key (topic, source, called tags, own
 * tags). A topic or source is the log's own field where it has one (`own`: look for
 * them; false where the caller knows the logs have none), else what the callable gave
 * (`topics`, `sources`: a value a log, or None where the option is not a callable), else
 * None (the configuration's); each must be a str (a callable's may be None). Tags are
 * (key, value) pairs of str (see tag_pairs): the callable's (or None) and the log's own
 * (or None). A log whose fields break these has a key of its own, (Ellipsis, its index):
 * the caller takes it one by one. A key is made once a group, not once a log (the str
 * of a group's logs are compared as text, without making a key to look up). */
static PyObject *group_by_fields(PyObject *module, PyObject *args) {
    PyObject *logs, *topics, *sources, *tags;
    int own = 1;
    if (!PyArg_ParseTuple(args, "O!OOO|p:group_by_fields", &PyList_Type, &logs, &topics,
                          &sources, &tags, &own)) {
        return NULL;
    }
    PyObject *columns[3] = {topics, sources, tags};
    for (int column = 0; column < 3; column++) {
        if (columns[column] != Py_None &&
            (!PyList_Check(columns[column]) ||
             PyList_GET_SIZE(columns[column]) != PyList_GET_SIZE(logs))) {
            PyErr_SetString(PyExc_ValueError, "a value a log, or None");
            return NULL;
        }
    }
    KnownKey known[KNOWN_KEYS] = {{0, NULL, NULL}};
    Py_ssize_t known_count = 0;
    PyObject *groups = PyDict_New();
    for (Py_ssize_t i = 0; groups != NULL && i < PyList_GET_SIZE(logs); i++) {
        /* Held: a key's __eq__ (the user's, in a log with a colliding hash) may run. */
        PyObject *log = Py_NewRef(PyList_GET_ITEM(logs, i));
        FieldValues values;
        int found = field_values(log, topics, sources, tags, i, own, &values);
        int failed = found < 0;
        if (found > 0) {
            failed = add_to_fields_group(groups, known, &known_count, &values, log) < 0;
        } else if (found == 0) {
            PyObject *key = Py_BuildValue("(On)", Py_Ellipsis, i);
            failed = key == NULL || add_to_group(groups, key, log) == NULL;
            Py_XDECREF(key);
        }
        release_values(&values);
        Py_DECREF(log);
        if (failed) {
            Py_CLEAR(groups);
        }
    }
    forget_runs(known);
    return groups;
}

/* ---- place_runs: the bulk lane's runs added to their groups' open batches ----
 *
 * The open batch (sls_beam.batching._Open) keeps its state in slots; bind_open_batch
 * reads where each slot lies in its objects, once, from the class's member descriptors,
 * so that place_runs reads and writes them as the class's own code does, without an
 * attribute lookup each. */
enum { SLOT_PIECES, SLOT_RUNS, SLOT_COUNTS, SLOT_COUNT, SLOT_NBYTES, SLOT_ROOM, SLOT_FULL_AT,
       SLOT_COST, SLOT_LOOSE, OPEN_SLOTS };
static const char *const open_slot_names[OPEN_SLOTS] = {
    "pieces", "runs", "counts", "count", "nbytes", "room", "full_at", "cost", "loose"};
static PyTypeObject *open_type; /* the class bound, or NULL */
static Py_ssize_t open_slots[OPEN_SLOTS];

/* bind_open_batch(cls): cls's slots (object slots, as __slots__ makes them) for
 * place_runs. */
static PyObject *bind_open_batch(PyObject *module, PyObject *cls) {
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "a class with __slots__");
        return NULL;
    }
    Py_ssize_t offsets[OPEN_SLOTS];
    for (int slot = 0; slot < OPEN_SLOTS; slot++) {
        PyObject *descriptor = PyObject_GetAttrString(cls, open_slot_names[slot]);
        if (descriptor == NULL) {
            return NULL;
        }
        int member = Py_IS_TYPE(descriptor, &PyMemberDescr_Type) &&
                     ((PyMemberDescrObject *)descriptor)->d_member->type == T_OBJECT_EX;
        if (member) {
            offsets[slot] = ((PyMemberDescrObject *)descriptor)->d_member->offset;
        }
        Py_DECREF(descriptor);
        if (!member) {
            PyErr_Format(PyExc_TypeError, "%s is not a slot", open_slot_names[slot]);
            return NULL;
        }
    }
    memcpy(open_slots, offsets, sizeof offsets);
    Py_XSETREF(open_type, (PyTypeObject *)Py_NewRef(cls));
    Py_RETURN_NONE;
}

/* A slot of an open batch (borrowed; its __init__ sets them all). */
static inline PyObject **open_slot(PyObject *batch, int slot) {
    return (PyObject **)((char *)batch + open_slots[slot]);
}

/* An int slot's value; -1 with an exception set where it is not an int. */
static Py_ssize_t open_int(PyObject *batch, int slot) {
    PyObject *value = *open_slot(batch, slot);
    if (value == NULL || !PyLong_CheckExact(value)) {
        PyErr_Format(PyExc_TypeError, "%s is not an int", open_slot_names[slot]);
        return -1;
    }
    return PyLong_AsSsize_t(value);
}

/* Store `value` (a new reference, or NULL: fail) in a slot; -1 on failure. */
static int open_set(PyObject *batch, int slot, PyObject *value) {
    if (value == NULL) {
        return -1;
    }
    Py_XSETREF(*open_slot(batch, slot), value);
    return 0;
}

/* Run `index` added to its group's open batch, if the common case holds (see
 * place_runs): its cost in buffered bytes; 0, left to the caller; -1, an error. */
static Py_ssize_t place_run(PyObject *open_batches, PyObject *run, PyObject *joined,
                            PyObject *kept) {
    if (kept == Py_None || !PyBytes_CheckExact(joined) || !PyTuple_CheckExact(run) ||
        PyTuple_GET_SIZE(run) != 2) {
        return 0;
    }
    PyObject *lists = PyTuple_GET_ITEM(run, 1);
    if (!PyTuple_CheckExact(lists) || PyTuple_GET_SIZE(lists) != 2 ||
        PyTuple_GET_ITEM(lists, 0) != PyTuple_GET_ITEM(lists, 1) ||
        !PyList_CheckExact(PyTuple_GET_ITEM(lists, 0))) {
        return 0;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(joined), cost = size;
    if (kept != joined) {
        if (!Py_IS_TYPE(kept, &KeptRun_Type)) {
            return 0;
        }
        cost += PyBytes_GET_SIZE(((KeptRunObject *)kept)->kinds);
    }
    PyObject *batch = PyDict_GetItemWithError(open_batches, PyTuple_GET_ITEM(run, 0));
    if (batch == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    if (!Py_IS_TYPE(batch, open_type)) {
        return 0;
    }
    Py_ssize_t count = PyList_GET_SIZE(PyTuple_GET_ITEM(lists, 0));
    Py_ssize_t held = open_int(batch, SLOT_COUNT), nbytes = open_int(batch, SLOT_NBYTES);
    Py_ssize_t room = open_int(batch, SLOT_ROOM), full_at = open_int(batch, SLOT_FULL_AT);
    Py_ssize_t buffered = open_int(batch, SLOT_COST);
    if (PyErr_Occurred()) {
        return -1;
    }
    /* Short of full (so within max_logs), and within the group's room: BatchLimits.fits. */
    if (held + count >= full_at || nbytes + held + size > room) {
        return 0;
    }
    PyObject *pieces = *open_slot(batch, SLOT_PIECES), *runs = *open_slot(batch, SLOT_RUNS);
    PyObject *counts = *open_slot(batch, SLOT_COUNTS);
    if (!PyList_CheckExact(pieces) || !PyList_CheckExact(runs) || !PyList_CheckExact(counts)) {
        PyErr_SetString(PyExc_TypeError, "pieces, runs and counts must be lists");
        return -1;
    }
    PyObject *logs = PyLong_FromSsize_t(count);
    Py_ssize_t without_commas = size - (count - 1);
    int failed = logs == NULL || PyList_Append(pieces, joined) < 0 ||
                 PyList_Append(runs, kept) < 0 || PyList_Append(counts, logs) < 0 ||
                 open_set(batch, SLOT_LOOSE, Py_NewRef(Py_False)) < 0 ||
                 open_set(batch, SLOT_COUNT, PyLong_FromSsize_t(held + count)) < 0 ||
                 open_set(batch, SLOT_NBYTES, PyLong_FromSsize_t(nbytes + without_commas)) < 0 ||
                 open_set(batch, SLOT_COST, PyLong_FromSsize_t(buffered + cost)) < 0;
    Py_XDECREF(logs);
    return failed ? -1 : cost;
}

/* place_runs(open_batches, runs, encoded, kept) -> (cost, left): each run (group,
 * (elements, contents)) whose logs the encoder wrote (`encoded`) and kept as what gives
 * them back (`kept`), each element its own content, added to its group's open batch where
 * it has one that the run fits and leaves short of full: what that costs in buffered
 * bytes in all, and the indices of the runs left to the caller's general way, in order
 * (after a run left, its group's next runs are left too: a group's logs stay in order). */
static PyObject *place_runs(PyObject *module, PyObject *args) {
    PyObject *open_batches, *runs, *encoded, *kept;
    if (!PyArg_ParseTuple(args, "O!O!O!O!:place_runs", &PyDict_Type, &open_batches,
                          &PyList_Type, &runs, &PyList_Type, &encoded, &PyList_Type, &kept)) {
        return NULL;
    }
    if (open_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind_open_batch was not called");
        return NULL;
    }
    Py_ssize_t total = PyList_GET_SIZE(runs);
    if (PyList_GET_SIZE(encoded) != total || PyList_GET_SIZE(kept) != total) {
        PyErr_SetString(PyExc_ValueError, "runs, encoded and kept must be as many");
        return NULL;
    }
    PyObject *left = PyList_New(0);
    PyObject *left_groups = NULL; /* made at the first run left: its group's next runs too */
    Py_ssize_t cost = 0;
    for (Py_ssize_t i = 0; left != NULL && i < total; i++) {
        /* Held: a group's __eq__ may run (a dict lookup) and is not ours to trust. */
        PyObject *run = Py_NewRef(PyList_GET_ITEM(runs, i));
        PyObject *joined = Py_NewRef(PyList_GET_ITEM(encoded, i));
        PyObject *kept_run = Py_NewRef(PyList_GET_ITEM(kept, i));
        PyObject *group = PyTuple_CheckExact(run) && PyTuple_GET_SIZE(run) == 2
                              ? PyTuple_GET_ITEM(run, 0)
                              : NULL;
        int after_left = group != NULL && left_groups != NULL
                             ? PySet_Contains(left_groups, group)
                             : group == NULL;
        Py_ssize_t placed = after_left < 0    ? -1
                            : after_left != 0 ? 0
                                              : place_run(open_batches, run, joined, kept_run);
        if (placed == 0 && group != NULL) {
            if (left_groups == NULL) {
                left_groups = PySet_New(NULL);
            }
            if (left_groups == NULL || PySet_Add(left_groups, group) < 0) {
                placed = -1;
            }
        }
        Py_DECREF(run);
        Py_DECREF(joined);
        Py_DECREF(kept_run);
        if (placed > 0) {
            cost += placed;
            continue;
        }
        PyObject *index = placed == 0 ? PyLong_FromSsize_t(i) : NULL;
        if (index == NULL || PyList_Append(left, index) < 0) {
            Py_CLEAR(left);
        }
        Py_XDECREF(index);
    }
    Py_XDECREF(left_groups);
    return left == NULL ? NULL : Py_BuildValue("(nN)", cost, left);
}

/* ---- encode_json_lines: JSON text, one object a line, to the wire JSON ----
 *
 * Each line's object written as the encoder writes the dict orjson.loads gives for it,
 * without making the dict: keys and string values decoded and escaped again as orjson
 * escapes them, numbers, true, false and null as strings (a float as repr writes it),
 * a nested object or array as its compact JSON (orjson's) in a string. A line it cannot
 * vouch for goes back to the caller, which parses it and takes the per-log path (that
 * applies and names every rule): not JSON, not an object, an empty object; a key that
 * is empty, over 128 bytes, starting "__" (reserved, the time, the group's fields) or
 * "_extract_others_"; a key twice in one object; a \u escape of a lone surrogate; an int of
 * more than 18 digits or "-0" (orjson gives a float, or 0); inside a nested value, a
 * float whose orjson text is not its repr (an exponent, under 1e-4); a value whose text
 * may pass 1 MiB; nesting deeper than MAX_DEPTH; a log over max_log_bytes. */

#define MAX_KEYS 64
#define MAX_DEPTH 32

/* What a byte inside a JSON string asks of the scan. */
enum { PLAIN = 0, QUOTE, BACKSLASH, CONTROL, MULTIBYTE };
static char string_bytes[256];

static void make_string_bytes(void) {
    for (int c = 0; c < 0x20; c++) {
        string_bytes[c] = CONTROL;
    }
    string_bytes['"'] = QUOTE;
    string_bytes['\\'] = BACKSLASH;
    for (int c = 0x80; c < 0x100; c++) {
        string_bytes[c] = MULTIBYTE;
    }
}

typedef struct {
    const unsigned char *p, *end; /* the rest of the line */
    Buffer *out;
} Scan;

static void skip_space(Scan *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\r')) {
        s->p++;
    }
}

/* The length of the valid UTF-8 character at p (2 to 4 bytes), or 0. */
static int utf8_character(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    Py_ssize_t left = end - p;
    if (c >= 0xC2 && c <= 0xDF) {
        return left >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
            (c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0)) {
            return 0; /* cut short, overlong, or a surrogate */
        }
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
            (p[3] & 0xC0) != 0x80 || (c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] >= 0x90)) {
            return 0;
        }
        return 4;
    }
    return 0;
}

/* A character orjson escapes (under 0x20, a quote, a backslash), as it escapes it; in a
 * nested value's text, escaped once more for the string that holds the text. */
static int put_escape(Buffer *out, unsigned char c, int nested) {
    static const char hex[] = "0123456789abcdef";
    char escape = escapes[c];
    if (reserve(out, 8) < 0) {
        return -1;
    }
    char *o = out->data + out->size;
    *o++ = '\\';
    if (nested) {
        *o++ = '\\';
        if (escape == '"' || escape == '\\') {
            *o++ = '\\';
        }
    }
    *o++ = escape;
    if (escape == 'u') {
        *o++ = '0';
        *o++ = '0';
        *o++ = hex[c >> 4];
        *o++ = hex[c & 0xf];
    }
    out->size = o - out->data;
    return 0;
}

/* The code point of a \u escape's 4 hex digits at p, or -1. */
static long hex4(const unsigned char *p, const unsigned char *end) {
    if (end - p < 4) {
        return -1;
    }
    long code = 0;
    for (int i = 0; i < 4; i++) {
        int c = p[i], digit = c >= '0' && c <= '9'   ? c - '0'
                              : c >= 'a' && c <= 'f' ? c - 'a' + 10
                              : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                     : -1;
        if (digit < 0) {
            return -1;
        }
        code = code * 16 + digit;
    }
    return code;
}

/* One escape after its backslash (at s->p), decoded and written as orjson writes it. */
static int put_unescaped(Scan *s, int nested) {
    if (s->p >= s->end) {
        return 1;
    }
    unsigned char c;
    switch (*s->p++) {
    case '"': c = '"'; break;
    case '\\': c = '\\'; break;
    case '/': c = '/'; break;
    case 'b': c = '\b'; break;
    case 'f': c = '\f'; break;
    case 'n': c = '\n'; break;
    case 'r': c = '\r'; break;
    case 't': c = '\t'; break;
    case 'u': {
        long code = hex4(s->p, s->end);
        if (code < 0 || (code >= 0xDC00 && code <= 0xDFFF)) {
            return 1; /* not JSON, or a lone low surrogate (orjson refuses it) */
        }
        s->p += 4;
        if (code >= 0xD800 && code <= 0xDBFF) { /* a pair: one character past U+FFFF */
            long low = s->end - s->p >= 6 && s->p[0] == '\\' && s->p[1] == 'u'
                           ? hex4(s->p + 2, s->end)
                           : -1;
            if (low < 0xDC00 || low > 0xDFFF) {
                return 1;
            }
            s->p += 6;
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
        }
        if (code >= 0x80) {
            char utf8[4];
            int size = code < 0x800 ? 2 : code < 0x10000 ? 3 : 4;
            for (int i = size - 1; i > 0; i--, code >>= 6) {
                utf8[i] = (char)(0x80 | (code & 0x3F));
            }
            utf8[0] = (char)((size == 2 ? 0xC0 : size == 3 ? 0xE0 : 0xF0) | code);
            return put(s->out, utf8, size) < 0 ? -1 : 0;
        }
        c = (unsigned char)code;
        break;
    }
    default:
        return 1;
    }
    if (escapes[c]) {
        return put_escape(s->out, c, nested);
    }
    return put(s->out, (const char *)&c, 1) < 0 ? -1 : 0;
}

/* A string (s->p just past its opening quote), written with its quotes as orjson writes
 * it; in a nested value, escaped once more. 0 written, 1 the caller's, -1 error. */
static int put_json_string(Scan *s, int nested) {
    const uint64_t highs = 0x8080808080808080ULL;
    if (nested ? PUT_LITERAL(s->out, "\\\"") < 0 : PUT_LITERAL(s->out, "\"") < 0) {
        return -1;
    }
    const unsigned char *start = s->p;
    for (;;) {
        while (s->end - s->p >= 8) { /* the common case: 8 plain ASCII bytes at a time */
            uint64_t word;
            memcpy(&word, s->p, 8);
            if (needs_escape(word) || (word & highs)) {
                break;
            }
            s->p += 8;
        }
        if (s->p >= s->end) {
            return 1; /* no closing quote */
        }
        switch (string_bytes[*s->p]) {
        case PLAIN:
            s->p++;
            continue;
        case MULTIBYTE: {
            int size = utf8_character(s->p, s->end);
            if (size == 0) {
                return 1;
            }
            s->p += size;
            continue;
        }
        case CONTROL:
            return 1; /* not JSON */
        }
        if (put(s->out, (const char *)start, s->p - start) < 0) {
            return -1;
        }
        if (*s->p++ == '"') {
            return (nested ? PUT_LITERAL(s->out, "\\\"") : PUT_LITERAL(s->out, "\"")) < 0 ? -1 : 0;
        }
        int result = put_unescaped(s, nested);
        if (result != 0) {
            return result;
        }
        start = s->p;
    }
}

/* Whether a JSON number's text (start to end) is what repr writes for its value, so that
 * it may be copied (repr costs ~0.3 µs): a fraction and no exponent, at most 15
 * significant digits (each such decimal is the only one of so few digits that gives its
 * double, so repr's shortest text is its own), no trailing zero (but "N.0"), and a value
 * from 1e-4 (repr's exponent starts below it, and at 1e16) or exactly zero. */
static int short_decimal(const unsigned char *start, const unsigned char *end) {
    const unsigned char *p = start + (*start == '-'), *point = memchr(p, '.', end - p);
    if (point == NULL || memchr(p, 'e', end - p) || memchr(p, 'E', end - p)) {
        return 0;
    }
    Py_ssize_t digits = point - p, fraction = end - point - 1;
    if (fraction > 1 && end[-1] == '0') {
        return 0; /* "1.50": repr writes "1.5" */
    }
    if (*p == '0') { /* 0.xyz: its leading zeros are not significant */
        const unsigned char *q = point + 1;
        while (q < end && *q == '0') {
            q++;
        }
        if (q == end) {
            return 1; /* zero: "0.0" (a trailing zero past ".0" was ruled out above) */
        }
        return q - point - 1 <= 3 && end - q <= 15;
    }
    if (fraction == 1 && point[1] == '0') {
        fraction = 0; /* "N.0": the zero is repr's form, not a digit */
    }
    return digits + fraction <= 15;
}

/* A number, as a log's value (quoted) or inside a nested value. */
static int put_json_number(Scan *s, int nested) {
    const unsigned char *start = s->p, *p = s->p, *end = s->end;
    int fraction = 0;
    if (*p == '-') {
        p++;
    }
    const unsigned char *digits = p;
    if (p < end && *p == '0') {
        p++;
    } else if (p < end && *p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    } else {
        return 1;
    }
    Py_ssize_t int_digits = p - digits;
    if (p < end && *p == '.') {
        fraction = 1;
        if (++p >= end || *p < '0' || *p > '9') {
            return 1;
        }
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        fraction = 1;
        if (++p < end && (*p == '+' || *p == '-')) {
            p++;
        }
        if (p >= end || *p < '0' || *p > '9') {
            return 1;
        }
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    s->p = p;
    const char *quote = nested ? "" : "\"";
    Py_ssize_t quotes = nested ? 0 : 1;
    if (!fraction) {
        if (int_digits > 18 || (start[0] == '-' && start[1] == '0')) {
            return 1; /* orjson gives a float past 64 bits, and 0 for -0 */
        }
        return put(s->out, quote, quotes) < 0 || put(s->out, (const char *)start, p - start) < 0 ||
                       put(s->out, quote, quotes) < 0
                   ? -1
                   : 0;
    }
    if (short_decimal(start, p)) { /* its own text is repr's: copied */
        return put(s->out, quote, quotes) < 0 || put(s->out, (const char *)start, p - start) < 0 ||
                       put(s->out, quote, quotes) < 0
                   ? -1
                   : 0;
    }
    char text[512]; /* a double in full: 309 digits and its fraction */
    if (p - start >= (Py_ssize_t)sizeof(text)) {
        return 1;
    }
    memcpy(text, start, p - start);
    text[p - start] = '\0';
    double value = PyOS_string_to_double(text, NULL, NULL);
    if (value == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 1;
    }
    if (!isfinite(value)) {
        return 1; /* too large for a double: orjson says so its own way */
    }
    char *repr = PyOS_double_to_string(value, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (repr == NULL) {
        return -1;
    }
    int result;
    if (nested && (strchr(repr, 'e') != NULL || (value != 0.0 && fabs(value) < 1e-4))) {
        result = 1; /* orjson's text is not repr's there */
    } else {
        result = put(s->out, quote, quotes) < 0 || put(s->out, repr, strlen(repr)) < 0 ||
                         put(s->out, quote, quotes) < 0
                     ? -1
                     : 0;
    }
    PyMem_Free(repr);
    return result;
}

/* true, false or null, as a log's value ("true") or inside a nested value (true). */
static int put_json_literal(Scan *s, int nested) {
    static const char *const literals[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t size = strlen(literals[i]);
        if ((size_t)(s->end - s->p) >= size && memcmp(s->p, literals[i], size) == 0) {
            s->p += size;
            if (nested) {
                return put(s->out, literals[i], size) < 0 ? -1 : 0;
            }
            return PUT_LITERAL(s->out, "\"") < 0 || put(s->out, literals[i], size) < 0 ||
                           PUT_LITERAL(s->out, "\"") < 0
                       ? -1
                       : 0;
        }
    }
    return 1;
}

static int put_json_value(Scan *s, int nested, int depth);

/* A key (s->p at its opening quote) and its colon; 1 when it names a key already
 * written at `keys` (offsets of their text in the output, `count` of them) or breaks
 * a rule (top level). */
static int put_json_key(Scan *s, Py_ssize_t *keys, Py_ssize_t *sizes, int count, int nested) {
    if (s->p >= s->end || *s->p != '"' || count >= MAX_KEYS) {
        return 1;
    }
    s->p++;
    Py_ssize_t start = s->out->size;
    int result = put_json_string(s, nested);
    if (result != 0) {
        return result;
    }
    Py_ssize_t size = s->out->size - start;
    const char *text = s->out->data + start;
    if (!nested) { /* the key's text between its quotes, as written */
        Py_ssize_t inner = size - 2;
        if (inner < 1 || inner > 128 || (inner >= 2 && text[1] == '_' && text[2] == '_') ||
            (inner == 16 && memcmp(text + 1, "_extract_others_", 16) == 0)) {
            return 1;
        }
    }
    for (int i = 0; i < count; i++) {
        if (sizes[i] == size && memcmp(s->out->data + keys[i], text, size) == 0) {
            return 1; /* orjson keeps the last value at the first place */
        }
    }
    keys[count] = start;
    sizes[count] = size;
    skip_space(s);
    if (s->p >= s->end || *s->p != ':') {
        return 1;
    }
    s->p++;
    skip_space(s);
    return PUT_LITERAL(s->out, ":") < 0 ? -1 : 0;
}

/* An object or array (s->p at its bracket), compact, as text inside a string. */
static int put_json_nested(Scan *s, int depth) {
    if (depth > MAX_DEPTH) {
        return 1;
    }
    unsigned char open = *s->p++, close = open == '{' ? '}' : ']';
    Py_ssize_t keys[MAX_KEYS], sizes[MAX_KEYS];
    int count = 0;
    if (put(s->out, (const char *)&open, 1) < 0) {
        return -1;
    }
    skip_space(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return put(s->out, (const char *)&close, 1) < 0 ? -1 : 0;
    }
    for (;;) {
        int result = 0;
        if (open == '{') {
            result = put_json_key(s, keys, sizes, count++, 1);
        }
        if (result == 0) {
            result = put_json_value(s, 1, depth + 1);
        }
        if (result != 0) {
            return result;
        }
        skip_space(s);
        if (s->p < s->end && (*s->p == ',' || *s->p == close)) {
            unsigned char c = *s->p++;
            if (put(s->out, (const char *)&c, 1) < 0) {
                return -1;
            }
            if (c == close) {
                return 0;
            }
            skip_space(s);
            continue;
        }
        return 1;
    }
}

static int put_json_value(Scan *s, int nested, int depth) {
    if (s->p >= s->end) {
        return 1;
    }
    unsigned char c = *s->p;
    if (c == '"') {
        s->p++;
        return put_json_string(s, nested);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        return put_json_number(s, nested);
    }
    if (c == '{' || c == '[') {
        if (nested) {
            return put_json_nested(s, depth);
        }
        if (PUT_LITERAL(s->out, "\"") < 0) {
            return -1;
        }
        int result = put_json_nested(s, depth);
        return result != 0 ? result : PUT_LITERAL(s->out, "\"") < 0 ? -1 : 0;
    }
    return put_json_literal(s, nested);
}

/* One line's log; 0 written, 1 the caller's, -1 error. */
static int put_json_line(Scan *s, const char *tail, Py_ssize_t tail_size) {
    Py_ssize_t keys[MAX_KEYS], sizes[MAX_KEYS];
    int count = 0;
    skip_space(s);
    if (s->p >= s->end || *s->p != '{') {
        return 1;
    }
    s->p++;
    if (PUT_LITERAL(s->out, "{") < 0) {
        return -1;
    }
    skip_space(s);
    for (;;) {
        int result = put_json_key(s, keys, sizes, count++, 0);
        Py_ssize_t value_start = s->out->size;
        if (result == 0) {
            result = put_json_value(s, 0, 1);
        }
        if (result != 0) {
            return result;
        }
        if (s->out->size - value_start - 2 > MAX_VALUE_BYTES) {
            return 1; /* its text may be over 1 MiB (escapes count here, not there) */
        }
        skip_space(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            skip_space(s);
            if (PUT_LITERAL(s->out, ",") < 0) {
                return -1;
            }
            continue;
        }
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            skip_space(s);
            if (s->p != s->end) {
                return 1; /* more after the object */
            }
            return put(s->out, tail, tail_size) < 0 || PUT_LITERAL(s->out, "}") < 0 ? -1 : 0;
        }
        return 1;
    }
}

static int put_offset(Buffer *buffer, Py_ssize_t offset) {
    int64_t value = offset;
    return put(buffer, (const char *)&value, sizeof(value));
}

static PyObject *bytes_of(const Buffer *buffer) {
    return PyBytes_FromStringAndSize(buffer->data, buffer->size);
}

/* encode_json_lines(text, tail, max_log_bytes) -> (joined, ends, starts, others). */
static PyObject *encode_json_lines(PyObject *module, PyObject *args) {
    Py_buffer text;
    const char *tail;
    Py_ssize_t tail_size, max_log_bytes;
    if (!PyArg_ParseTuple(args, "y*y#n:encode_json_lines", &text, &tail, &tail_size,
                          &max_log_bytes)) {
        return NULL;
    }
    Buffer joined = {NULL, 0, 0}, ends = {NULL, 0, 0}, starts = {NULL, 0, 0},
           others = {NULL, 0, 0};
    int failed = reserve(&joined, text.len + text.len / 4 + 64) < 0;
    const unsigned char *data = text.buf, *end = data + text.len, *line = data;
    while (!failed && line < end) {
        const unsigned char *stop = memchr(line, '\n', end - line);
        stop = stop ? stop : end;
        Scan s = {line, stop, &joined};
        skip_space(&s);
        if (s.p != stop) { /* a blank line is skipped */
            Py_ssize_t before = joined.size;
            int comma = ends.size > 0;
            int result = comma && PUT_LITERAL(&joined, ",") < 0 ? -1 : 0;
            if (result == 0) {
                result = put_json_line(&s, tail, tail_size);
            }
            if (result == 0 && joined.size - before - comma > max_log_bytes) {
                result = 1;
            }
            if (result == 0) {
                failed = put_offset(&ends, joined.size) < 0 ||
                         put_offset(&starts, line - data) < 0;
            } else if (result == 1) {
                joined.size = before;
                failed = put_offset(&others, line - data) < 0;
            } else {
                failed = 1;
            }
        }
        line = stop + 1;
    }
    PyBuffer_Release(&text);
    PyObject *result = NULL;
    if (!failed) {
        result = Py_BuildValue("(NNNN)", bytes_of(&joined), bytes_of(&ends), bytes_of(&starts),
                               bytes_of(&others));
    } else if (!PyErr_Occurred()) {
        PyErr_NoMemory();
    }
    PyMem_Free(joined.data);
    PyMem_Free(ends.data);
    PyMem_Free(starts.data);
    PyMem_Free(others.data);
    return result;
}

static PyMethodDef methods[] = {
    {"encode_runs", encode_runs, METH_VARARGS,
     "encode_runs(runs, known_keys, tail, max_log_bytes, keep=False, own_groups=False)\n"
     "    -> list[bytes | None] | tuple[list[bytes | None], list[bytes | tuple | None]]\n\n"
     "Each run's logs' JSON objects joined by commas, or None where one is not plain;\n"
     "with keep, also what makes each run's logs again: its wire JSON itself (the logs'\n"
     "own), or (wire JSON, kinds), or None where they would not come back as they were."},
    {"group_by", group_by, METH_VARARGS,
     "group_by(keys, items) -> dict[key, list]\n\nThe items of each key, in order."},
    {"element_runs", element_runs, METH_O,
     "element_runs(elements) -> list[tuple[int, int]]\n\nThe runs of elements of one kind, as\n"
     "(kind, end): 0, exactly dicts without __topic__, __source__ or __tags__; 1, exactly\n"
     "dicts with one of them; 2, the others."},
    {"group_by_fields", group_by_fields, METH_VARARGS,
     "group_by_fields(logs, topics, sources, tags, own=True) -> dict[tuple, list]\n\n"
     "Dicts grouped by "
     "what sets their group: (topic, source, called tags, own tags); (Ellipsis, index)\n"
     "for a log taken one by one."},
    {"bind_open_batch", bind_open_batch, METH_O,
     "bind_open_batch(cls) -> None\n\nThe open batch's class (its slots) for place_runs."},
    {"place_runs", place_runs, METH_VARARGS,
     "place_runs(open_batches, runs, encoded, kept) -> tuple[int, list[int]]\n\n"
     "The runs that fit their group's open batch, short of full, added to it as the\n"
     "encoder kept them: their cost in buffered bytes, and the indices of the others."},
    {"encode_json_lines", encode_json_lines, METH_VARARGS,
     "encode_json_lines(text, tail, max_log_bytes)\n"
     "    -> tuple[bytes, bytes, bytes, bytes]\n\n"
     "The logs of JSON lines joined by commas; the end of each in that text and the start\n"
     "of its line (int64 offsets); the starts of the lines left to the caller (blank\n"
     "lines are skipped)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sls_beam._speedups",
    "The hot path's loops in C: the wire format's bulk encoder (see sls_beam.wire) and the "
    "batcher's grouping of logs by source (see sls_beam.batching).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    make_escapes();
    make_string_bytes();
    const char *names[3] = {"__topic__", "__source__", "__tags__"};
    for (int field = 0; field < 3; field++) {
        group_fields[field] = PyUnicode_InternFromString(names[field]);
        if (group_fields[field] == NULL) {
            return NULL;
        }
    }
    PyObject *orjson = PyImport_ImportModule("orjson");
    if (orjson == NULL) {
        return NULL;
    }
    orjson_dumps = PyObject_GetAttrString(orjson, "dumps");
    Py_DECREF(orjson);
    if (orjson_dumps == NULL) {
        return NULL;
    }
    if (PyType_Ready(&KeptRun_Type) < 0) {
        return NULL;
    }
    PyObject *created = PyModule_Create(&module);
    if (created != NULL && PyModule_AddObjectRef(created, "KeptRun", (PyObject *)&KeptRun_Type) < 0) {
        Py_CLEAR(created);
    }
    return created;
}
