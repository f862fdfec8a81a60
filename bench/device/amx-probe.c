/* Whether this host runs AMX for a process that asks for it as ggml does: XCR0's tile bits,
 * the kernel's permission (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), then tile
 * instructions (TILEZERO, and an INT8 dot product, TDPBSSD) in this thread and in a thread
 * started after the permission was granted, as ggml's OpenMP threads are.
 *   gcc -O1 -mamx-tile -mamx-int8 -pthread -o amx-probe amx-probe.c && ./amx-probe */
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_GET_XCOMP_PERM 0x1022
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static void *tiles(void *who) {
  static uint8_t cfg[64] __attribute__((aligned(64)));
  static int8_t a[16 * 64], b[16 * 64];
  static int32_t c[16 * 16];
  cfg[0] = 1;                            /* palette 1 */
  for (int t = 0; t < 3; t++) {          /* three tiles of 16 rows x 64 bytes */
    cfg[16 + 2 * t] = 64;
    cfg[48 + t] = 16;
  }
  _tile_loadconfig(cfg);
  _tile_zero(0);
  _tile_loadd(1, a, 64);
  _tile_loadd(2, b, 64);
  _tile_dpbssd(0, 1, 2);
  _tile_stored(0, c, 64);
  _tile_release();
  printf("tile instructions ran in the %s thread\n", (const char *)who);
  fflush(stdout);
  return NULL;
}

int main(void) {
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  uint64_t xcr0 = ((uint64_t)hi << 32) | lo, perm = 0;
  printf("XCR0 %#llx: tile config %d, tile data %d\n", (unsigned long long)xcr0,
         (int)(xcr0 >> 17 & 1), (int)(xcr0 >> 18 & 1));
  long rc = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
  syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &perm);
  printf("ARCH_REQ_XCOMP_PERM: %ld; permitted %#llx\n", rc, (unsigned long long)perm);
  fflush(stdout);
  if (rc != 0) return 1;
  tiles("first");
  pthread_t t;
  pthread_create(&t, NULL, tiles, "second");
  pthread_join(t, NULL);
  return 0;
}
