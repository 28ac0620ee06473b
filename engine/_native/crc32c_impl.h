/* CRC32C (Castagnoli, polynomial 0x1EDC6F41 reflected as 0x82F63B78).
 *
 * Two implementations behind one entry point:
 *   - x86-64 with SSE4.2: the crc32 instruction, 8 bytes per step;
 *   - everywhere else: table-driven slice-by-8.
 * The choice is made once, at first call, from the CPU's feature bits, so a
 * wheel built on one x86-64 machine runs on any other.
 * Thread-safety: the tables are built before any thread can call in
 * (qkv_crc32c_init is called at module import, under the GIL).
 */
#ifndef QKV_CRC32C_IMPL_H
#define QKV_CRC32C_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* static: every extension module that includes this header has its own
 * copy of the tables, so each must call qkv_crc32c_init() when imported. */
static uint32_t qkv_crc_table[8][256];
static int qkv_crc_use_hw = 0;
static int qkv_crc_ready = 0;

static void qkv_crc32c_init(void) {
    if (qkv_crc_ready) return;
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
        qkv_crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = qkv_crc_table[0][i];
        for (int t = 1; t < 8; t++) {
            c = qkv_crc_table[0][c & 0xff] ^ (c >> 8);
            qkv_crc_table[t][i] = c;
        }
    }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    qkv_crc_use_hw = __builtin_cpu_supports("sse4.2");
#endif
    qkv_crc_ready = 1;
}

static uint32_t qkv_crc32c_sw(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    while (n && ((uintptr_t)p & 7)) { crc = qkv_crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8); n--; }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;  /* little-endian hosts; see the guard below */
        crc = qkv_crc_table[7][w & 0xff] ^ qkv_crc_table[6][(w >> 8) & 0xff] ^
              qkv_crc_table[5][(w >> 16) & 0xff] ^ qkv_crc_table[4][(w >> 24) & 0xff] ^
              qkv_crc_table[3][(w >> 32) & 0xff] ^ qkv_crc_table[2][(w >> 40) & 0xff] ^
              qkv_crc_table[1][(w >> 48) & 0xff] ^ qkv_crc_table[0][w >> 56];
        p += 8; n -= 8;
    }
    while (n--) crc = qkv_crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "qkv_crc32c_sw's slice-by-8 assumes a little-endian host"
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2")))
static uint32_t qkv_crc32c_hw(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = ~crc;
    while (n && ((uintptr_t)p & 7)) { c = __builtin_ia32_crc32qi((uint32_t)c, *p++); n--; }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8; n -= 8;
    }
    while (n--) c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#endif

/* Extend crc (0 to start) over p[0..n). */
static inline uint32_t qkv_crc32c_extend(uint32_t crc, const uint8_t *p, size_t n) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (qkv_crc_use_hw) return qkv_crc32c_hw(crc, p, n);
#endif
    return qkv_crc32c_sw(crc, p, n);
}

static inline uint32_t qkv_crc32c_sw_only(uint32_t crc, const uint8_t *p, size_t n) {
    return qkv_crc32c_sw(crc, p, n);
}

/* Stored CRCs are masked (rotated and offset) so that a CRC computed over
 * data that itself embeds CRCs does not degenerate (LevelDB's reasoning). */
static inline uint32_t qkv_crc32c_mask(uint32_t crc) {
    return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}
static inline uint32_t qkv_crc32c_unmask(uint32_t masked) {
    uint32_t rot = masked - 0xa282ead8u;
    return (rot >> 17) | (rot << 15);
}

#endif
