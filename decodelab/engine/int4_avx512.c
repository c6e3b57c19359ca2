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
 * The weight tile is unpacked once for up to 4 activation rows, so verifying a few drafted
 * tokens costs little more than one decoding step.
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

/* TB tiles (16*TB outputs) x MR activation rows starting at tile t0, row m0. Two accumulators
   per output (column pairs 0-1 and 2-3 of each 8-column block) shorten the dependency chains;
   every output sees the same operations whatever TB and MR are. */
ALWAYS_INLINE void tile_block(const problem *pb, int t0, int m0, const int TB, const int MR) {
    const __m512i mask = _mm512_set1_epi32(NIBBLE_MASK), exponent = _mm512_set1_epi32(BF16_128);
    const __m512 c136 = _mm512_set1_ps(136.0f);
    const int k = pb->k, group = pb->group, groups = k / group;
    __m512 y[4][4];
#pragma GCC unroll 4
    for (int t = 0; t < TB; t++)
#pragma GCC unroll 4
        for (int m = 0; m < MR; m++) y[t][m] = _mm512_setzero_ps();
    for (int g = 0; g < groups; g++) {
        __m512 acc[4][4][2];
#pragma GCC unroll 4
        for (int t = 0; t < TB; t++)
#pragma GCC unroll 4
            for (int m = 0; m < MR; m++) acc[t][m][0] = acc[t][m][1] = _mm512_setzero_ps();
        const int first = g * (group / 8);
        for (int j = first; j < first + group / 8; j++) {
            unpacked u[4];
#pragma GCC unroll 4
            for (int t = 0; t < TB; t++) {
                const uint8_t *unit = pb->tiles + unit_offset(pb, t0 + t, j);
                /* decoding streams weights from DRAM in short runs: fetch ahead of the prefetchers */
                _mm_prefetch((const char *)unit + PREFETCH_BYTES, _MM_HINT_T0);
                u[t] = unpack_block(unit, mask, exponent);
            }
#pragma GCC unroll 4
            for (int m = 0; m < MR; m++) {
                const uint16_t *xr = pb->x + (size_t)(m0 + m) * k + 8 * j;
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++) {
                    const __m512bh xb = broadcast_pair(xr + 2 * c);
#pragma GCC unroll 4
                    for (int t = 0; t < TB; t++)
                        acc[t][m][c & 1] = _mm512_dpbf16_ps(acc[t][m][c & 1], (__m512bh)u[t].pair[c], xb);
                }
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < TB; t++) {
            const uint16_t *sz = pb->scales + ((size_t)(t0 + t) * groups + g) * 32;
            const __m512 scale = load_bf16x16(sz);
            const __m512 zero = _mm512_fnmadd_ps(c136, scale, load_bf16x16(sz + 16));
#pragma GCC unroll 4
            for (int m = 0; m < MR; m++) {
                const __m512 dot = _mm512_add_ps(acc[t][m][0], acc[t][m][1]);
                y[t][m] = _mm512_fmadd_ps(dot, scale, y[t][m]);
                y[t][m] = _mm512_fmadd_ps(_mm512_set1_ps(pb->group_sums[(size_t)(m0 + m) * groups + g]), zero, y[t][m]);
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < TB; t++)
#pragma GCC unroll 4
        for (int m = 0; m < MR; m++)
            _mm256_storeu_si256((__m256i *)(pb->out + (size_t)(m0 + m) * pb->n + (size_t)(t0 + t) * 16),
                                (__m256i)_mm512_cvtneps_pbh(y[t][m]));
}

#define BLOCK(TB, MR) \
    static void block_##TB##_##MR(const problem *pb, int t0, int m0) { tile_block(pb, t0, m0, TB, MR); }
#define BLOCKS_FOR(TB) BLOCK(TB, 1) BLOCK(TB, 2) BLOCK(TB, 3) BLOCK(TB, 4)
BLOCKS_FOR(1)
BLOCKS_FOR(2)
BLOCKS_FOR(3)
BLOCKS_FOR(4)

typedef void (*block_fn)(const problem *, int, int);
static const block_fn BLOCKS[4][4] = {
    {block_1_1, block_1_2, block_1_3, block_1_4},
    {block_2_1, block_2_2, block_2_3, block_2_4},
    {block_3_1, block_3_2, block_3_3, block_3_4},
    {block_4_1, block_4_2, block_4_3, block_4_4},
};

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
    /* One row: 4 tiles per block hide the accumulation latency; more rows share each unpacked
       tile (up to 4 rows at a time). */
    const int tiles_per_block = m == 1 ? 4 : m == 2 ? 2 : 1;
    const int rows_per_block = m <= 2 ? m : 4;
    const int n_tiles = n / 16;
    if (threads < 1) threads = 1;
    if (threads > n_tiles) threads = n_tiles;
    /* Each thread takes an equal contiguous run of tiles (balanced even for narrow weights). */
#pragma omp parallel num_threads(threads)
    {
        const int id = omp_get_thread_num(), team = omp_get_num_threads();
        const int begin = (int)((long)n_tiles * id / team), end = (int)((long)n_tiles * (id + 1) / team);
        for (int t0 = begin; t0 < end; t0 += tiles_per_block) {
            const int tb = end - t0 < tiles_per_block ? end - t0 : tiles_per_block;
            for (int m0 = 0; m0 < m; m0 += rows_per_block) {
                const int mr = m - m0 < rows_per_block ? m - m0 : rows_per_block;
                BLOCKS[tb - 1][mr - 1](&pb, t0, m0);
            }
        }
    }
    free(group_sums);
    return 0;
}
