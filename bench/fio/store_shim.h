/* C interface between the fio ioengine (C, built against fio's headers) and the store (C++).
 * One handle per fio job (thread): its own Ring, device and, in store mode, Pool. */
#ifndef DUPLEX_BENCH_FIO_STORE_SHIM_H
#define DUPLEX_BENCH_FIO_STORE_SHIM_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dpx_fio dpx_fio;

enum { DPX_FIO_RAW = 0, DPX_FIO_STORE = 1 };
enum { DPX_FIO_READ = 0, DPX_FIO_WRITE = 1, DPX_FIO_FLUSH = 2 };

/* Opens (creating if absent) `path`: raw mode uses it as the target of `size` bytes; store mode
 * formats it as a pool with one volume of `size` bytes (or opens the existing pool and finds the
 * volume "fio"). `fill` writes the whole target once first, so later writes overwrite in place.
 * Returns NULL with a message in `err` on failure. */
dpx_fio* dpx_fio_open(const char* path, uint64_t size, int mode, unsigned cluster_kib, int fill, char* err,
                      size_t errlen);
/* Queues one request; `cookie` comes back from dpx_fio_reap. Never blocks. */
void dpx_fio_queue(dpx_fio* h, int kind, uint64_t off, void* buf, size_t len, void* cookie);
/* Submits what is queued; waits until at least `min` requests completed (0: only what is ready);
 * stores up to `max` cookies and results (0 or -errno) and returns how many. */
int dpx_fio_reap(dpx_fio* h, unsigned min, unsigned max, void** cookies, int* results);
void dpx_fio_close(dpx_fio* h);

#ifdef __cplusplus
}
#endif
#endif
