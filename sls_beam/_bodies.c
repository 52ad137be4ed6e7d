/* Request bodies joined and lz4-compressed on a thread that never holds the interpreter
 * lock (see sls_beam.bodies): a Python helper thread takes the lock back from the
 * pipeline's thread at each step of a batch (woken with the batch, after the join, after
 * lz4), and each time the pipeline's thread waits for it; this thread takes it only when
 * it starts and when it ends.
 *
 * Lz4Worker(functions): the addresses of the lz4 package's own LZ4_compressBound,
 *   LZ4_createStream, LZ4_resetStream, LZ4_compress_fast_continue and LZ4_freeStream, in
 *   that order: a body is compressed as lz4.block.compress does it (a stream reset, then
 *   one block), so its bytes are the same.
 *   run(): the worker's loop, on a thread of the caller's; returns once closed.
 *   submit(parts) -> Lz4Job: the parts (a tuple of bytes) joined and compressed, as one
 *     raw LZ4 block (no frame, no size), in submission order.
 *   close(): no more jobs; those not started are cancelled; run() returns.
 * Lz4Job: done() -> bool; result() -> (raw_size, body), waiting (without the interpreter
 *   lock) until the worker has made it. A job dropped before it is made is cancelled
 *   (or waited for, if the worker is making it).
 *
 * The worker reads the parts' bytes and writes the job's body, which the job holds (and
 * nothing else changes) until it is made; it never touches a Python object's count. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>

typedef int (*Lz4CompressBound)(int input_size);
typedef void *(*Lz4CreateStream)(void);
typedef void (*Lz4ResetStream)(void *stream);
typedef int (*Lz4CompressFastContinue)(void *stream, const char *source, char *dest,
                                       int source_size, int max_dest_size, int acceleration);
typedef int (*Lz4FreeStream)(void *stream);

enum { QUEUED, MAKING, MADE, FAILED, CANCELLED };

typedef struct Lz4WorkerObject Lz4WorkerObject;

typedef struct Lz4JobObject {
    PyObject_HEAD
    Lz4WorkerObject *worker;
    struct Lz4JobObject *next; /* in the worker's queue (not a reference) */
    PyObject *parts;           /* a tuple of bytes */
    PyObject *body;            /* bytes of the bound's size until it is handed out */
    Py_ssize_t raw_size;
    Py_ssize_t body_size;
    int state; /* under the worker's lock */
    int resized;
} Lz4JobObject;

struct Lz4WorkerObject {
    PyObject_HEAD
    pthread_mutex_t lock;
    pthread_cond_t wake;  /* a job, or the close, for the worker */
    pthread_cond_t ended; /* a job made, failed or cancelled, for its waiters */
    Lz4JobObject *first, *last;
    int closing;
    char *raw; /* the joined parts, kept from one job to the next */
    size_t raw_capacity;
    void *stream; /* LZ4's state, reset for each body */
    Lz4CompressBound bound;
    Lz4ResetStream reset;
    Lz4CompressFastContinue compress;
    Lz4FreeStream free_stream;
    int ready; /* its lock and conditions were made */
};

static PyTypeObject Lz4Worker_Type, Lz4Job_Type;

/* ---- the worker's side: no Python object is touched but through its bytes ---- */

static int make(Lz4WorkerObject *worker, Lz4JobObject *job) {
    size_t size = (size_t)job->raw_size;
    if (size > worker->raw_capacity) {
        char *raw = realloc(worker->raw, size);
        if (raw == NULL) {
            return FAILED;
        }
        worker->raw = raw;
        worker->raw_capacity = size;
    }
    char *at = worker->raw;
    Py_ssize_t count = PyTuple_GET_SIZE(job->parts);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *part = PyTuple_GET_ITEM(job->parts, i);
        memcpy(at, PyBytes_AS_STRING(part), (size_t)PyBytes_GET_SIZE(part));
        at += PyBytes_GET_SIZE(part);
    }
    worker->reset(worker->stream);
    int written = worker->compress(worker->stream, worker->raw, PyBytes_AS_STRING(job->body),
                                   (int)job->raw_size, (int)PyBytes_GET_SIZE(job->body), 1);
    if (written <= 0) {
        return FAILED;
    }
    job->body_size = written;
    return MADE;
}

static PyObject *worker_run(Lz4WorkerObject *worker, PyObject *unused) {
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&worker->lock);
    for (;;) {
        while (worker->first == NULL && !worker->closing) {
            pthread_cond_wait(&worker->wake, &worker->lock);
        }
        Lz4JobObject *job = worker->first;
        if (job == NULL) {
            break; /* closed, and nothing left */
        }
        worker->first = job->next;
        if (worker->first == NULL) {
            worker->last = NULL;
        }
        job->next = NULL;
        job->state = MAKING;
        pthread_mutex_unlock(&worker->lock);
        int state = make(worker, job);
        pthread_mutex_lock(&worker->lock);
        job->state = state;
        pthread_cond_broadcast(&worker->ended);
    }
    pthread_mutex_unlock(&worker->lock);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* ---- the callers' side, with the interpreter lock ---- */

static void unlink_job(Lz4WorkerObject *worker, Lz4JobObject *job) {
    Lz4JobObject **link = &worker->first, *before = NULL;
    while (*link != NULL && *link != job) {
        before = *link;
        link = &(*link)->next;
    }
    if (*link == job) {
        *link = job->next;
        if (worker->last == job) {
            worker->last = before;
        }
        job->next = NULL;
    }
}

/* Wait (without the interpreter lock) until the job is no longer queued or being made. */
static void wait_for(Lz4JobObject *job) {
    Lz4WorkerObject *worker = job->worker;
    pthread_mutex_lock(&worker->lock);
    if (job->state == QUEUED || job->state == MAKING) {
        Py_BEGIN_ALLOW_THREADS
        while (job->state == QUEUED || job->state == MAKING) {
            pthread_cond_wait(&worker->ended, &worker->lock);
        }
        Py_END_ALLOW_THREADS
    }
    pthread_mutex_unlock(&worker->lock);
}

static PyObject *worker_submit(Lz4WorkerObject *worker, PyObject *parts) {
    if (!PyTuple_Check(parts)) {
        PyErr_SetString(PyExc_TypeError, "submit takes a tuple of bytes");
        return NULL;
    }
    Py_ssize_t raw_size = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(parts); i++) {
        PyObject *part = PyTuple_GET_ITEM(parts, i);
        if (!PyBytes_CheckExact(part)) {
            PyErr_SetString(PyExc_TypeError, "submit takes a tuple of bytes");
            return NULL;
        }
        raw_size += PyBytes_GET_SIZE(part);
    }
    int bound = raw_size <= INT_MAX ? worker->bound((int)raw_size) : 0;
    if (bound <= 0) {
        PyErr_Format(PyExc_ValueError, "a body of %zd bytes is past what LZ4 compresses",
                     raw_size);
        return NULL;
    }
    PyObject *body = PyBytes_FromStringAndSize(NULL, bound);
    if (body == NULL) {
        return NULL;
    }
    Lz4JobObject *job = PyObject_New(Lz4JobObject, &Lz4Job_Type);
    if (job == NULL) {
        Py_DECREF(body);
        return NULL;
    }
    job->worker = (Lz4WorkerObject *)Py_NewRef(worker);
    job->next = NULL;
    job->parts = Py_NewRef(parts);
    job->body = body;
    job->raw_size = raw_size;
    job->body_size = 0;
    job->resized = 0;
    pthread_mutex_lock(&worker->lock);
    if (worker->closing) {
        job->state = CANCELLED;
    } else {
        job->state = QUEUED;
        if (worker->last == NULL) {
            worker->first = job;
        } else {
            worker->last->next = job;
        }
        worker->last = job;
        pthread_cond_signal(&worker->wake);
    }
    pthread_mutex_unlock(&worker->lock);
    return (PyObject *)job;
}

static PyObject *worker_close(Lz4WorkerObject *worker, PyObject *unused) {
    pthread_mutex_lock(&worker->lock);
    worker->closing = 1;
    for (Lz4JobObject *job = worker->first, *next; job != NULL; job = next) {
        next = job->next;
        job->next = NULL;
        job->state = CANCELLED;
    }
    worker->first = worker->last = NULL;
    pthread_cond_broadcast(&worker->wake);
    pthread_cond_broadcast(&worker->ended);
    pthread_mutex_unlock(&worker->lock);
    Py_RETURN_NONE;
}

static PyObject *worker_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    unsigned long long at[5];
    static char *names[] = {"functions", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "(KKKKK):Lz4Worker", names, &at[0], &at[1],
                                     &at[2], &at[3], &at[4])) {
        return NULL;
    }
    for (int i = 0; i < 5; i++) {
        if (at[i] == 0) {
            PyErr_SetString(PyExc_ValueError, "Lz4Worker takes the functions' addresses");
            return NULL;
        }
    }
    Lz4WorkerObject *worker = (Lz4WorkerObject *)type->tp_alloc(type, 0);
    if (worker == NULL) {
        return NULL;
    }
    worker->bound = (Lz4CompressBound)(uintptr_t)at[0];
    worker->reset = (Lz4ResetStream)(uintptr_t)at[2];
    worker->compress = (Lz4CompressFastContinue)(uintptr_t)at[3];
    worker->free_stream = (Lz4FreeStream)(uintptr_t)at[4];
    worker->stream = ((Lz4CreateStream)(uintptr_t)at[1])();
    if (worker->stream == NULL || pthread_mutex_init(&worker->lock, NULL) != 0 ||
        pthread_cond_init(&worker->wake, NULL) != 0 ||
        pthread_cond_init(&worker->ended, NULL) != 0) {
        Py_DECREF(worker);
        return PyErr_NoMemory();
    }
    worker->ready = 1;
    return (PyObject *)worker;
}

static void worker_dealloc(Lz4WorkerObject *worker) {
    /* No job is left (each holds the worker) and run() has returned (its thread holds
     * the worker while it runs). */
    if (worker->ready) {
        pthread_mutex_destroy(&worker->lock);
        pthread_cond_destroy(&worker->wake);
        pthread_cond_destroy(&worker->ended);
    }
    if (worker->stream != NULL) {
        worker->free_stream(worker->stream);
    }
    free(worker->raw);
    Py_TYPE(worker)->tp_free((PyObject *)worker);
}

static PyObject *job_done(Lz4JobObject *job, PyObject *unused) {
    pthread_mutex_lock(&job->worker->lock);
    int done = job->state != QUEUED && job->state != MAKING;
    pthread_mutex_unlock(&job->worker->lock);
    return PyBool_FromLong(done);
}

static PyObject *job_result(Lz4JobObject *job, PyObject *unused) {
    wait_for(job);
    if (job->state == CANCELLED) {
        PyErr_SetString(PyExc_RuntimeError, "the body was cancelled: its worker was closed");
        return NULL;
    }
    if (job->state == FAILED) {
        return PyErr_NoMemory(); /* LZ4 fails only where its buffers were not allocated */
    }
    if (!job->resized) {
        if (_PyBytes_Resize(&job->body, job->body_size) < 0) {
            return NULL; /* job->body is NULL now */
        }
        job->resized = 1;
        Py_CLEAR(job->parts); /* no longer read */
    }
    return Py_BuildValue("(nO)", job->raw_size, job->body);
}

static void job_dealloc(Lz4JobObject *job) {
    Lz4WorkerObject *worker = job->worker;
    pthread_mutex_lock(&worker->lock);
    if (job->state == QUEUED) {
        unlink_job(worker, job);
        job->state = CANCELLED;
    }
    pthread_mutex_unlock(&worker->lock);
    wait_for(job); /* being made: the worker still reads its parts and writes its body */
    Py_XDECREF(job->parts);
    Py_XDECREF(job->body);
    Py_DECREF(worker);
    PyObject_Free(job);
}

static PyMethodDef worker_methods[] = {
    {"run", (PyCFunction)worker_run, METH_NOARGS,
     "run()\n\nMake the submitted bodies, in order, until closed (on a thread of its own)."},
    {"submit", (PyCFunction)worker_submit, METH_O,
     "submit(parts) -> Lz4Job\n\nThe parts (a tuple of bytes) joined and compressed as one "
     "raw LZ4 block."},
    {"close", (PyCFunction)worker_close, METH_NOARGS,
     "close()\n\nNo more bodies: those not started are cancelled; run() returns."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef job_methods[] = {
    {"done", (PyCFunction)job_done, METH_NOARGS, "done() -> bool: made, failed or cancelled."},
    {"result", (PyCFunction)job_result, METH_NOARGS,
     "result() -> (raw_size, body): waits until it is made."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Lz4Worker_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sls_beam._bodies.Lz4Worker",
    .tp_basicsize = sizeof(Lz4WorkerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Request bodies joined and lz4-compressed without the interpreter lock.",
    .tp_new = worker_new,
    .tp_dealloc = (destructor)worker_dealloc,
    .tp_methods = worker_methods,
};

static PyTypeObject Lz4Job_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sls_beam._bodies.Lz4Job",
    .tp_basicsize = sizeof(Lz4JobObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One body on its way (see Lz4Worker.submit).",
    .tp_dealloc = (destructor)job_dealloc,
    .tp_methods = job_methods,
};

static struct PyModuleDef bodies_module = {
    PyModuleDef_HEAD_INIT, "sls_beam._bodies",
    "Request bodies joined and lz4-compressed on a thread without the interpreter lock.", -1,
    NULL,
};

PyMODINIT_FUNC PyInit__bodies(void) {
    if (PyType_Ready(&Lz4Worker_Type) < 0 || PyType_Ready(&Lz4Job_Type) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&bodies_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Lz4Worker", (PyObject *)&Lz4Worker_Type) < 0 ||
        PyModule_AddObjectRef(module, "Lz4Job", (PyObject *)&Lz4Job_Type) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
