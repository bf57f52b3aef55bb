/* fio external ioengine "duplex": fio drives the store (a Pool volume on a UringDevice) or, for the
 * baseline, the raw file through the same Ring. Built against fio's source tree (see
 * bench/fio/build-engine.sh); docs/performance.md explains the numbers it gives.
 *
 *   fio --ioengine=external:/path/libfio_duplex.so --duplex_mode=store --filename=/var/tmp/pool.img \
 *       --size=1g --rw=randwrite --bs=4k --iodepth=32 --duplex_fill=1 --name=w
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fio.h"
#include "optgroup.h"

#include "store_shim.h"

struct duplex_options {
  void* pad; /* fio: ->off1 of the first option must not be 0 */
  char* mode;
  unsigned int cluster_kib;
  unsigned int fill;
};

static struct fio_option options[] = {
    {
        .name = "duplex_mode",
        .lname = "duplex target",
        .type = FIO_OPT_STR_STORE,
        .off1 = offsetof(struct duplex_options, mode),
        .def = "store",
        .help = "store: a Pool volume on the file; raw: the file itself",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "duplex_cluster_kib",
        .lname = "pool cluster size",
        .type = FIO_OPT_INT,
        .off1 = offsetof(struct duplex_options, cluster_kib),
        .def = "64",
        .help = "cluster size (KiB) of a pool the engine creates",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "duplex_fill",
        .lname = "fill first",
        .type = FIO_OPT_BOOL,
        .off1 = offsetof(struct duplex_options, fill),
        .def = "0",
        .help = "write the whole target once before the job (so writes overwrite in place)",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = NULL,
    },
};

struct duplex_data {
  dpx_fio* h;
  struct io_u** events;
  void** cookies;
  int* results;
};

static int duplex_init(struct thread_data* td) {
  struct duplex_options* o = td->eo;
  struct duplex_data* d;
  char err[512];
  int mode;
  if (td->o.nr_files != 1) {
    log_err("duplex: exactly one file per job (the raw file or the pool file)\n");
    return 1;
  }
  mode = (o->mode && strcmp(o->mode, "raw") == 0) ? DPX_FIO_RAW : DPX_FIO_STORE;
  d = calloc(1, sizeof(*d));
  d->events = calloc(td->o.iodepth, sizeof(struct io_u*));
  d->cookies = calloc(td->o.iodepth, sizeof(void*));
  d->results = calloc(td->o.iodepth, sizeof(int));
  d->h = dpx_fio_open(td->files[0]->file_name, td->o.size, mode, o->cluster_kib, o->fill, err, sizeof err);
  if (!d->h) {
    log_err("duplex: %s\n", err);
    free(d->events);
    free(d->cookies);
    free(d->results);
    free(d);
    return 1;
  }
  td->io_ops_data = d;
  return 0;
}

static void duplex_cleanup(struct thread_data* td) {
  struct duplex_data* d = td->io_ops_data;
  if (!d) return;
  dpx_fio_close(d->h);
  free(d->events);
  free(d->cookies);
  free(d->results);
  free(d);
  td->io_ops_data = NULL;
}

static enum fio_q_status duplex_queue(struct thread_data* td, struct io_u* io_u) {
  struct duplex_data* d = td->io_ops_data;
  int kind;
  fio_ro_check(td, io_u);
  switch (io_u->ddir) {
    case DDIR_READ: kind = DPX_FIO_READ; break;
    case DDIR_WRITE: kind = DPX_FIO_WRITE; break;
    case DDIR_SYNC:
    case DDIR_DATASYNC: kind = DPX_FIO_FLUSH; break;
    default: io_u->error = EINVAL; return FIO_Q_COMPLETED;
  }
  dpx_fio_queue(d->h, kind, io_u->offset, io_u->xfer_buf, io_u->xfer_buflen, io_u);
  return FIO_Q_QUEUED;
}

static int duplex_getevents(struct thread_data* td, unsigned int min, unsigned int max,
                            const struct timespec* t) {
  struct duplex_data* d = td->io_ops_data;
  int i, n;
  (void)t;
  if (max > td->o.iodepth) max = td->o.iodepth;
  n = dpx_fio_reap(d->h, min, max, d->cookies, d->results);
  for (i = 0; i < n; i++) {
    struct io_u* io_u = d->cookies[i];
    io_u->error = d->results[i] < 0 ? -d->results[i] : 0;
    if (!io_u->error) io_u->resid = 0;
    d->events[i] = io_u;
  }
  return n;
}

static struct io_u* duplex_event(struct thread_data* td, int event) {
  struct duplex_data* d = td->io_ops_data;
  return d->events[event];
}

static int duplex_open_file(struct thread_data* td, struct fio_file* f) {
  (void)td;
  (void)f;
  return 0; /* the shim owns the file (O_DIRECT, lock) */
}

static int duplex_close_file(struct thread_data* td, struct fio_file* f) {
  (void)td;
  (void)f;
  return 0;
}

static int duplex_get_file_size(struct thread_data* td, struct fio_file* f) {
  f->real_file_size = td->o.size;
  fio_file_set_size_known(f);
  return 0;
}

struct ioengine_ops ioengine = {
    .name = "duplex",
    .version = FIO_IOOPS_VERSION,
    .flags = FIO_DISKLESSIO | FIO_NOEXTEND | FIO_NODISKUTIL,
    .init = duplex_init,
    .cleanup = duplex_cleanup,
    .queue = duplex_queue,
    .getevents = duplex_getevents,
    .event = duplex_event,
    .open_file = duplex_open_file,
    .close_file = duplex_close_file,
    .get_file_size = duplex_get_file_size,
    .options = options,
    .option_struct_size = sizeof(struct duplex_options),
};
