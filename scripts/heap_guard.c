// heap_guard: an LD_PRELOAD library that makes a native kernel's write past the end of its
// buffer fail at once, where it happens, instead of corrupting the heap for a later abort.
//
// PyTorch allocates tensor storage, and oneDNN its scratchpads, with posix_memalign. Here every
// aligned allocation (posix_memalign, aligned_alloc, memalign) gets pages of its own, placed so
// that the block ends where an inaccessible page begins: a write past the end faults
// (SIGSEGV; with PYTHONFAULTHANDLER=1 Python prints the line that ran the kernel). The few bytes
// between the block's end and that page (alignment leaves up to alignment - 1) hold a pattern
// checked on free: a change there aborts with a message. Other allocations (malloc, calloc)
// are left to the C library. Used by scripts/heap_guard.sh and tests/test_heap_guard.py.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SLOTS (1u << 22)  // open addressing: live guarded blocks, far fewer than this
#define EMPTY 0u
#define GONE 1u  // a freed slot inside a probe chain
#define CANARY 0xA5

typedef struct {
  uintptr_t ptr;   // the block handed out (EMPTY, GONE: none)
  uintptr_t base;  // its mapping
  size_t length;   // the mapping's length, the inaccessible page included
  size_t size;     // the bytes asked for
} Block;

static Block blocks[SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static void (*libc_free)(void *);
static void *(*libc_realloc)(void *, size_t);
static size_t (*libc_usable_size)(void *);

static size_t page_size(void) {  // 4 KiB on x86-64, up to 64 KiB on some ARM machines
  static size_t page;
  if (page == 0) page = (size_t)sysconf(_SC_PAGESIZE);
  return page;
}

static void hold(void) { pthread_mutex_lock(&lock); }
static void release(void) { pthread_mutex_unlock(&lock); }

static void find_libc(void) {
  if (libc_free != NULL) return;
  libc_realloc = dlsym(RTLD_NEXT, "realloc");
  libc_usable_size = dlsym(RTLD_NEXT, "malloc_usable_size");
  libc_free = dlsym(RTLD_NEXT, "free");
}

__attribute__((constructor)) static void start(void) {
  find_libc();
  pthread_atfork(hold, release, release);  // a child never inherits the lock held
}

static unsigned slot_of(uintptr_t ptr) {
  return (unsigned)(((ptr >> 4) * 0x9E3779B97F4A7C15ull) >> 40) & (SLOTS - 1);
}

static void fail(const char *what, const Block *b) {
  char text[200];
  int n = snprintf(text, sizeof text, "heap_guard: %s (a block of %zu bytes at %p)\n", what,
                   b->size, (void *)b->ptr);
  if (n > 0 && write(2, text, (size_t)n < sizeof text ? (size_t)n : sizeof text - 1) < 0) {
    // nothing more to say: abort regardless
  }
  abort();
}

static void remember(const Block *b) {
  hold();
  unsigned i = slot_of(b->ptr);
  while (blocks[i].ptr != EMPTY && blocks[i].ptr != GONE) i = (i + 1) & (SLOTS - 1);
  blocks[i] = *b;
  release();
}

// The guarded block at ptr (removed from the table when forget), or 0 when ptr is not one.
static int find(uintptr_t ptr, Block *out, int forget) {
  hold();
  unsigned i = slot_of(ptr);
  for (; blocks[i].ptr != EMPTY; i = (i + 1) & (SLOTS - 1)) {
    if (blocks[i].ptr != ptr) continue;
    *out = blocks[i];
    if (forget)
      blocks[i].ptr = blocks[(i + 1) & (SLOTS - 1)].ptr == EMPTY ? EMPTY : GONE;
    release();
    return 1;
  }
  release();
  return 0;
}

static void *guarded(size_t align, size_t size) {
  if (align < 16) align = 16;
  if (size == 0) size = 1;
  if (size > SIZE_MAX / 2) return NULL;
  size_t page = page_size();
  size_t data = (size + align + page - 1) / page * page;  // room to align the block's start
  size_t length = data + page;
  char *base = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return NULL;
  char *fence = base + data;
  if (mprotect(fence, page, PROT_NONE) != 0) {
    munmap(base, length);
    return NULL;
  }
  char *ptr = (char *)((uintptr_t)(fence - size) & ~(uintptr_t)(align - 1));
  memset(ptr + size, CANARY, (size_t)(fence - (ptr + size)));
  Block b = {(uintptr_t)ptr, (uintptr_t)base, length, size};
  remember(&b);
  return ptr;
}

static void check_and_unmap(const Block *b) {
  const unsigned char *end = (const unsigned char *)(b->ptr + b->size);
  const unsigned char *fence = (const unsigned char *)(b->base + b->length - page_size());
  for (const unsigned char *c = end; c < fence; c++)
    if (*c != CANARY) fail("bytes written past the end of a block", b);
  munmap((void *)b->base, b->length);
}

int posix_memalign(void **out, size_t align, size_t size) {
  if (align < sizeof(void *) || (align & (align - 1)) != 0) return EINVAL;
  void *ptr = guarded(align, size);
  if (ptr == NULL) return ENOMEM;
  *out = ptr;
  return 0;
}

void *aligned_alloc(size_t align, size_t size) {
  void *ptr = guarded(align, size);
  if (ptr == NULL) errno = ENOMEM;
  return ptr;
}

void *memalign(size_t align, size_t size) { return aligned_alloc(align, size); }

void free(void *ptr) {
  Block b;
  if (ptr != NULL && find((uintptr_t)ptr, &b, 1)) {
    check_and_unmap(&b);
    return;
  }
  find_libc();  // a free before this library's constructor ran
  libc_free(ptr);
}

void *realloc(void *ptr, size_t size) {
  Block b;
  if (ptr == NULL || !find((uintptr_t)ptr, &b, 0)) {
    find_libc();
    return libc_realloc(ptr, size);
  }
  void *moved = guarded(16, size);
  if (moved == NULL) return NULL;
  memcpy(moved, ptr, b.size < size ? b.size : size);
  free(ptr);
  return moved;
}

size_t malloc_usable_size(void *ptr) {
  Block b;
  if (ptr != NULL && find((uintptr_t)ptr, &b, 0)) return b.size;
  find_libc();
  return libc_usable_size(ptr);
}
