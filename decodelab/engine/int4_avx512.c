/* Few-row int4-weight x bfloat16-activation matrix product for decoding on AVX-512 CPUs.
 *
 * Weight-only 4-bit quantization ("w4a16", as in GPTQ, Frantar et al. 2022, and AWQ, Lin et al.
 * 2023): w = (q - 8) * scale + zero per group of G input columns, q in 0..15.  Decoding reads
 * every weight once per token, so the product should be memory-bound; this kernel keeps the
 * unpacking cheap enough that it can be:
 *   - a 64-byte load holds 16 output rows x 8 input columns; per 16-bit word, a mask and an OR
 *     (one ternary-logic instruction) turn a nibble q into the bfloat16 number 128 + q (exponent
 *     2^7, mantissa q: exact), so 4 shifts/masks give 4 vectors of 16 rows x 2 columns;
 *   - one VDPBF16PS per 32 weights and activation row multiplies those pairs by the row's two
 *     activations (broadcast) and accumulates in float32: acc = sum (128 + q) x;
 *   - per group: y += scale * acc + (zero - 136 * scale) * sum(x over the group), which is
 *     sum ((q - 8) * scale + zero) * x.
 * Rows go 8 at a time over the weights; within one quantization group (1 KB of weights for a run
 * of 4 tiles and G = 32, which stays in L1) rows go in pairs, so the weights stream from memory
 * once per 8 rows, in the layout's order, and a verify of a few drafted tokens reads no more
 * memory than one decoding step.
 *
 * Every output element is computed by one thread with the same sequence of operations whatever
 * the number of rows or threads: row m's result does not depend on the other rows (speculative
 * verification equals plain decoding bit for bit).
 *
 * Layout (built by decodelab/engine/native_int4.py): for 8 input columns k0..k0+7 of one row,
 * 4 bytes: word 0 = q[k0] | q[k0+2] << 4 | q[k0+4] << 8 | q[k0+6] << 12, word 1 the same from
 * k0+1. Word bits 0-3 of the row's two words are then columns (k0, k0+1), bits 4-7 (k0+2, k0+3),
 * bits 8-11 (k0+4, k0+5), bits 12-15 (k0+6, k0+7).
 *   tiles  groups of 4 tiles (16 rows each; the last group may hold fewer), each group stored
 *          [K/8][tiles in the group][16][4] uint8: one decoding step streams each thread's share
 *          of a weight as one contiguous run (short per-tile streams starve the prefetchers)
 *   scales [N/16][K/G][2][16] bf16  the 16 rows' scales, then their zeros
 *   x      [M][K] bf16, out [M][N] bf16
 */
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512BF16__)
#error "this kernel needs AVX-512 F, BW and BF16"
#endif

#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))

typedef struct {
    const uint16_t *x;
    const uint8_t *tiles;
    const uint16_t *scales;
    uint16_t *out;
    const float *group_sums; /* [M][K/G] */
    int m, n, k, group;
} problem;

#ifndef PREFETCH_BYTES
#define PREFETCH_BYTES 2048
#endif
#define ROW_CHUNK 8 /* activation rows per pass over the weights */
#define NIBBLE_MASK 0x000F000F
#define BF16_128 0x43004300 /* bfloat16 128.0 in both words; OR-ing q into its mantissa gives 128 + q */

typedef struct {
    __m512 pair[4]; /* columns (k0, k0+1), (k0+2, k0+3), (k0+4, k0+5), (k0+6, k0+7) of 16 rows */
} unpacked;

ALWAYS_INLINE unpacked unpack_block(const uint8_t *bytes, __m512i mask, __m512i exponent) {
    const __m512i w = _mm512_loadu_si512(bytes);
    unpacked u;
    /* ternary logic 0xEA: (A & B) | C */
    u.pair[0] = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(w, mask, exponent, 0xEA));
    u.pair[1] = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_srli_epi16(w, 4), mask, exponent, 0xEA));
    u.pair[2] = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_srli_epi16(w, 8), mask, exponent, 0xEA));
    u.pair[3] = _mm512_castsi512_ps(_mm512_or_si512(_mm512_srli_epi16(w, 12), exponent));
    return u;
}

ALWAYS_INLINE __m512 load_bf16x16(const uint16_t *p) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

ALWAYS_INLINE __m512bh broadcast_pair(const uint16_t *x) {
    int32_t pair;
    memcpy(&pair, x, 4);
    return (__m512bh)_mm512_set1_epi32(pair);
}

/* Byte offset of 8-column block j of tile t (see the layout above). */
ALWAYS_INLINE size_t unit_offset(const problem *pb, int t, int j) {
    const int n_tiles = pb->n / 16, group = t / 4, first = group * 4;
    const int in_group = n_tiles - first < 4 ? n_tiles - first : 4;
    return ((size_t)first * (pb->k / 8) + (size_t)j * in_group + (t - first)) * 64;
}

/* One quantization group g of TB tiles (16*TB outputs, one interleaved run of the layout) for MR
   activation rows from m0: accumulate sum (128 + q) x over the group's columns, then fold the group
   into y[t][ym + m]. Two accumulators per output (column pairs 0-1 and 2-3 of each 8-column block)
   shorten the dependency chains; every output sees the same operations whatever TB, MR and the
   row blocking are. */
ALWAYS_INLINE void group_block(const problem *pb, int t0, const int TB, int m0, const int MR, int g,
                               __m512 (*y)[ROW_CHUNK], int ym) {
    const __m512i mask = _mm512_set1_epi32(NIBBLE_MASK), exponent = _mm512_set1_epi32(BF16_128);
    const int k = pb->k, group = pb->group, groups = k / group;
    __m512 acc[4][4][2];
#pragma GCC unroll 4
    for (int t = 0; t < TB; t++)
#pragma GCC unroll 4
        for (int m = 0; m < MR; m++) acc[t][m][0] = acc[t][m][1] = _mm512_setzero_ps();
    const int first = g * (group / 8);
    for (int j = first; j < first + group / 8; j++) {
#pragma GCC unroll 4
        for (int t = 0; t < TB; t++) {
            const uint8_t *unit = pb->tiles + unit_offset(pb, t0 + t, j);
            /* decoding streams weights from DRAM in short runs: fetch ahead of the prefetchers */
            _mm_prefetch((const char *)unit + PREFETCH_BYTES, _MM_HINT_T0);
            const unpacked u = unpack_block(unit, mask, exponent);
#pragma GCC unroll 4
            for (int m = 0; m < MR; m++) {
                const uint16_t *xr = pb->x + (size_t)(m0 + m) * k + 8 * j;
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++)
                    acc[t][m][c & 1] = _mm512_dpbf16_ps(acc[t][m][c & 1], (__m512bh)u.pair[c], broadcast_pair(xr + 2 * c));
            }
        }
    }
    const __m512 c136 = _mm512_set1_ps(136.0f);
#pragma GCC unroll 4
    for (int t = 0; t < TB; t++) {
        const uint16_t *sz = pb->scales + ((size_t)(t0 + t) * groups + g) * 32;
        const __m512 scale = load_bf16x16(sz);
        const __m512 zero = _mm512_fnmadd_ps(c136, scale, load_bf16x16(sz + 16));
#pragma GCC unroll 4
        for (int m = 0; m < MR; m++) {
            const __m512 dot = _mm512_add_ps(acc[t][m][0], acc[t][m][1]);
            __m512 out = _mm512_fmadd_ps(dot, scale, y[t][ym + m]);
            y[t][ym + m] = _mm512_fmadd_ps(_mm512_set1_ps(pb->group_sums[(size_t)(m0 + m) * groups + g]), zero, out);
        }
    }
}

#define GROUP_BLOCK(TB, MR)                                                                            \
    static void group_block_##TB##_##MR(const problem *pb, int t0, int m0, int g, __m512 (*y)[ROW_CHUNK], \
                                        int ym) {                                                      \
        group_block(pb, t0, TB, m0, MR, g, y, ym);                                                     \
    }
/* Whole runs of 1-4 tiles for 1-2 rows; single tiles for 3-4 rows (see tile_run). */
GROUP_BLOCK(1, 1) GROUP_BLOCK(1, 2) GROUP_BLOCK(2, 1) GROUP_BLOCK(2, 2)
GROUP_BLOCK(3, 1) GROUP_BLOCK(3, 2) GROUP_BLOCK(4, 1) GROUP_BLOCK(4, 2)
GROUP_BLOCK(1, 3) GROUP_BLOCK(1, 4)

typedef void (*group_block_fn)(const problem *, int, int, int, __m512 (*)[ROW_CHUNK], int);
static const group_block_fn RUN_BLOCKS[4][2] = {
    {group_block_1_1, group_block_1_2},
    {group_block_2_1, group_block_2_2},
    {group_block_3_1, group_block_3_2},
    {group_block_4_1, group_block_4_2},
};
static const group_block_fn TILE_BLOCKS[2] = {group_block_1_3, group_block_1_4};

/* One interleaved run of tb <= 4 tiles for up to ROW_CHUNK rows from m0, group by group; the
   group's tb x group/2 bytes stay in L1 while every row block re-reads them, so the weights stream
   from memory once per ROW_CHUNK rows. One or two rows take the whole run at once (the unpacked
   tiles are not shared much: 16 or 32 VDPBF16PS per 4 loads); three or four rows go tile by tile,
   sharing each unpacked tile among all of them (on Zen 4 the unpacking competes with the dot
   products for the same vector pipes, so sharing it wider is what makes extra rows cheap). */
static void tile_run(const problem *pb, int t0, int tb, int m0, int rows) {
    __m512 y[4][ROW_CHUNK];
    for (int t = 0; t < tb; t++)
        for (int m = 0; m < rows; m++) y[t][m] = _mm512_setzero_ps();
    const int groups = pb->k / pb->group;
    for (int g = 0; g < groups; g++)
        for (int m = 0; m < rows;) {
            const int left = rows - m, mr = left >= 4 ? 4 : left;
            if (mr <= 2) {
                RUN_BLOCKS[tb - 1][mr - 1](pb, t0, m0 + m, g, y, m);
            } else {
                for (int t = 0; t < tb; t++) TILE_BLOCKS[mr - 3](pb, t0 + t, m0 + m, g, y + t, m);
            }
            m += mr;
        }
    for (int t = 0; t < tb; t++)
        for (int m = 0; m < rows; m++)
            _mm256_storeu_si256((__m256i *)(pb->out + (size_t)(m0 + m) * pb->n + (size_t)(t0 + t) * 16),
                                (__m256i)_mm512_cvtneps_pbh(y[t][m]));
}

/* Returns 0 on success, 1 on bad shapes, 2 when out of memory. */
int int4_bf16_matmul(const uint16_t *x, const uint8_t *tiles, const uint16_t *scales, uint16_t *out,
                     int m, int n, int k, int group, int threads) {
    if (m <= 0 || n <= 0 || n % 16 || group <= 0 || group % 8 || k % group) return 1;
    const int groups = k / group;
    float *group_sums = malloc(sizeof(float) * (size_t)m * groups);
    if (!group_sums) return 2;
    for (int row = 0; row < m; row++)
        for (int g = 0; g < groups; g++) {
            float sum = 0.0f;
            for (int i = 0; i < group; i++) {
                uint32_t bits = (uint32_t)x[(size_t)row * k + g * group + i] << 16;
                float value;
                memcpy(&value, &bits, 4);
                sum += value;
            }
            group_sums[(size_t)row * groups + g] = sum;
        }
    problem pb = {x, tiles, scales, out, group_sums, m, n, k, group};
    const int n_tiles = n / 16, runs = (n_tiles + 3) / 4;
    if (threads < 1) threads = 1;
    if (threads > runs) threads = runs;
    /* Each thread takes an equal contiguous share of the 4-tile runs (one stream through memory). */
#pragma omp parallel num_threads(threads)
    {
        const int id = omp_get_thread_num(), team = omp_get_num_threads();
        const int begin = (int)((long)runs * id / team), end = (int)((long)runs * (id + 1) / team);
        for (int m0 = 0; m0 < m; m0 += ROW_CHUNK)
            for (int run = begin; run < end; run++) {
                const int t0 = run * 4, tb = n_tiles - t0 < 4 ? n_tiles - t0 : 4;
                tile_run(&pb, t0, tb, m0, m - m0 < ROW_CHUNK ? m - m0 : ROW_CHUNK);
            }
    }
    free(group_sums);
    return 0;
}
