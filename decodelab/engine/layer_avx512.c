/* One decoder layer of a Llama / Qwen2 model for a cached forward of a few tokens of one row, in two
 * calls (the first stores the new keys and values into the caller's cache buffers, or the caller
 * appends them in between): bfloat16 activations,
 * int4 weights through int4_bf16_matmul (int4_avx512.c), float32 attention.
 *
 * Why in C: in Python each of the ~80 small tensor operations of a layer costs a few microseconds of
 * dispatch, which for SmolLM2-135M (30 layers of 576-wide matrices) was more than the matrix
 * products themselves. Here the glue around the products -- RMS norm (Zhang & Sennrich 2019),
 * rotary embedding (Su et al. 2021), grouped-query attention (Ainslie et al. 2023), SwiGLU
 * (Shazeer 2020), residual adds -- runs in the same call as them.
 *
 * Rounding follows the model's bfloat16 forward: every tensor the model materializes in bfloat16
 * (normed input, projections, rotated q/k, attention output, SiLU output, its product with up, the
 * residual stream) is rounded to bfloat16 here too, and each elementwise operation computes in
 * float32 from bfloat16 inputs as PyTorch's CPU kernels do. Reductions (the norm's mean, attention)
 * sum in their own fixed order, so results are close to, not bit-identical with, the PyTorch path.
 *
 * Every row (token) is computed with the same operations whatever the number of rows, threads or
 * the other rows: a verify of n tokens equals n one-token steps bit for bit. A query's attention
 * reads the keys it may see in cache order: the first prefix[i] slots, then its extra slots
 * (a token tree node's ancestors; a padded batch row's valid slots), which is also the order a
 * plain step sees them in -- so a batch row whose cache holds the same keys computes what it would
 * alone.
 */
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512BF16__)
#error "this kernel needs AVX-512 F, BW and BF16"
#endif

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ATTEND_GROUP_MAX 16 /* query heads one attention task takes at most */

int int4_bf16_matmul(const uint16_t *x, const uint8_t *tiles, const uint16_t *scales, uint16_t *out, int m, int n,
                     int k, int group, int threads);

typedef struct {
    const uint8_t *tiles;
    const uint16_t *scales;
    const uint16_t *bias; /* NULL: none */
    int out_features, in_features, group;
    int doubled; /* an 8-bit weight as one 4-bit weight over [x; x] (native_int4.split_int8) */
} packed_weight;

typedef struct {
    const uint16_t *input_norm, *post_norm; /* RMS norm weights, bfloat16 */
    float eps;
    int hidden, heads, kv_heads, head_dim, intermediate;
    packed_weight q, k, v, o, gate, up, down;
} layer_weights;

static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Round to nearest even, NaN kept quiet: what PyTorch's float -> bfloat16 conversion does. */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

static inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

/* exp for the attention weights and SiLU: 2^(x log2 e) with a degree-6 polynomial for the fraction
   (relative error ~2e-7 over the range softmax uses, which is x <= 0). */
static inline __m512 exp_ps(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-103.0f));
    x = _mm512_min_ps(x, _mm512_set1_ps(88.0f));
    const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(0.693147180559945309f)); /* |f| <= ln2/2 */
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static inline float exp_scalar(float x) {
    float out[16];
    _mm512_storeu_ps(out, exp_ps(_mm512_set1_ps(x)));
    return out[0];
}

/* out[r] = bf16(w * bf16(x[r] / sqrt(mean(x[r]^2) + eps))), as the model's RMS norm rounds. */
static void rms_norm(const uint16_t *x, const uint16_t *w, float eps, uint16_t *out, int rows, int d) {
    for (int r = 0; r < rows; r++) {
        const uint16_t *xr = x + (size_t)r * d;
        float sum = 0.0f;
        for (int i = 0; i < d; i++) {
            const float v = bf16_to_f32(xr[i]);
            sum += v * v;
        }
        const float scale = 1.0f / sqrtf(sum / (float)d + eps);
        for (int i = 0; i < d; i++)
            out[(size_t)r * d + i] = f32_to_bf16(bf16_to_f32(w[i]) * round_bf16(bf16_to_f32(xr[i]) * scale));
    }
}

/* y = x W^T (+ b), rows independent; `wide` is scratch of rows x 2 in_features for 8-bit weights. */
static int linear(const packed_weight *w, const uint16_t *x, int rows, uint16_t *y, uint16_t *wide, int threads) {
    const uint16_t *input = x;
    int k = w->in_features;
    if (w->doubled) {
        for (int r = 0; r < rows; r++) {
            memcpy(wide + (size_t)r * 2 * k, x + (size_t)r * k, sizeof(uint16_t) * k);
            memcpy(wide + (size_t)r * 2 * k + k, x + (size_t)r * k, sizeof(uint16_t) * k);
        }
        input = wide;
        k *= 2;
    }
    const int code = int4_bf16_matmul(input, w->tiles, w->scales, y, rows, w->out_features, k, w->group, threads);
    if (code || !w->bias) return code;
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < w->out_features; i++) {
            uint16_t *cell = y + (size_t)r * w->out_features + i;
            *cell = f32_to_bf16(bf16_to_f32(*cell) + bf16_to_f32(w->bias[i]));
        }
    return 0;
}

/* Rotary embedding in place on [rows][heads][head_dim]: bf16(bf16(x cos) + bf16(rot(x) sin)) with
   rot(x) = (-x2, x1), as the model's apply_rotary_pos_emb; cos/sin [rows][head_dim] bfloat16. */
static void rotate(uint16_t *x, int rows, int heads, int dim, const uint16_t *cos, const uint16_t *sin) {
    const int half = dim / 2;
    float rotated[1024];
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < heads; h++) {
            uint16_t *v = x + ((size_t)r * heads + h) * dim;
            for (int i = 0; i < dim; i++) rotated[i] = i < half ? -bf16_to_f32(v[i + half]) : bf16_to_f32(v[i - half]);
            for (int i = 0; i < dim; i++) {
                const float c = bf16_to_f32(cos[(size_t)r * dim + i]), s = bf16_to_f32(sin[(size_t)r * dim + i]);
                v[i] = f32_to_bf16(round_bf16(bf16_to_f32(v[i]) * c) + round_bf16(rotated[i] * s));
            }
        }
}

static void add_into(uint16_t *acc, const uint16_t *delta, size_t count) {
    for (size_t i = 0; i < count; i++) acc[i] = f32_to_bf16(bf16_to_f32(acc[i]) + bf16_to_f32(delta[i]));
}

/* Phase 1: normed input -> q [rows][heads][dim], k and v [rows][kv_heads][dim], q and k rotated.
   With key_cache / value_cache (a KV cache layer [sequences][kv_heads][capacity][dim], rows being
   `per_sequence` consecutive tokens of each sequence), k and v are also stored at slots
   start .. start + per_sequence - 1. Returns 0, or the matmul's error code, or 2 when out of memory. */
int layer_qkv(const layer_weights *L, const uint16_t *x, int rows, int per_sequence, const uint16_t *cos,
              const uint16_t *sin, uint16_t *q, uint16_t *k, uint16_t *v, uint16_t *key_cache, uint16_t *value_cache,
              int capacity, int start, int threads) {
    if (L->head_dim > 1024 || per_sequence <= 0 || rows % per_sequence) return 1;
    if (key_cache && (start < 0 || start + per_sequence > capacity)) return 1;
    const size_t wide_cols = 2 * (size_t)L->hidden;
    uint16_t *normed = malloc(sizeof(uint16_t) * (size_t)rows * L->hidden);
    uint16_t *wide = malloc(sizeof(uint16_t) * (size_t)rows * wide_cols);
    int code = (!normed || !wide) ? 2 : 0;
    if (!code) {
        rms_norm(x, L->input_norm, L->eps, normed, rows, L->hidden);
        code = linear(&L->q, normed, rows, q, wide, threads);
        if (!code) code = linear(&L->k, normed, rows, k, wide, threads);
        if (!code) code = linear(&L->v, normed, rows, v, wide, threads);
        if (!code) {
            rotate(q, rows, L->heads, L->head_dim, cos, sin);
            rotate(k, rows, L->kv_heads, L->head_dim, cos, sin);
        }
    }
    if (!code && key_cache) {
        const size_t dim_bytes = sizeof(uint16_t) * (size_t)L->head_dim;
        for (int r = 0; r < rows; r++)
            for (int h = 0; h < L->kv_heads; h++) {
                const size_t from = ((size_t)r * L->kv_heads + h) * L->head_dim;
                const size_t to = (((size_t)(r / per_sequence) * L->kv_heads + h) * capacity + start
                                   + r % per_sequence) * L->head_dim;
                memcpy(key_cache + to, k + from, dim_bytes);
                memcpy(value_cache + to, v + from, dim_bytes);
            }
    }
    free(normed);
    free(wide);
    return code;
}

static inline __attribute__((always_inline)) void attend_heads_dim(
        const layer_weights *L, const uint16_t *q, const uint16_t *keys, const uint16_t *values, int capacity,
        int row, int sequence, int h0, int h1, int prefix, const int32_t *extra, int n_extra, float scale,
        float *restrict scores, float *restrict work, uint16_t *restrict out, const int dim) {
    const int group = h1 - h0, kv = h0 / (L->heads / L->kv_heads);
    const int total = prefix + n_extra, chunks = dim / 16, vec = chunks * 16;
    const size_t base = ((size_t)sequence * L->kv_heads + kv) * capacity * dim;
    const uint16_t *kbase = keys + base, *vbase = values + base;
    float *restrict qf = work, *restrict acc = work + (size_t)group * dim;
    float best[ATTEND_GROUP_MAX], sum[ATTEND_GROUP_MAX];
    __m512 row_v[64];
    for (int g = 0; g < group; g++) {
        const uint16_t *qv = q + ((size_t)row * L->heads + h0 + g) * dim;
        for (int i = 0; i < dim; i++) qf[(size_t)g * dim + i] = bf16_to_f32(qv[i]);
        best[g] = -INFINITY;
    }
    for (int j = 0; j < total; j++) {
        const int slot = j < prefix ? j : extra[j - prefix];
        const uint16_t *kr = kbase + (size_t)slot * dim;
        for (int c = 0; c < chunks; c++)
            row_v[c] = _mm512_castsi512_ps(
                _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(kr + 16 * c))), 16));
        for (int g = 0; g < group; g++) {
            const float *qg = qf + (size_t)g * dim;
            __m512 dot = _mm512_setzero_ps();
            for (int c = 0; c < chunks; c++) dot = _mm512_fmadd_ps(_mm512_loadu_ps(qg + 16 * c), row_v[c], dot);
            float s = _mm512_reduce_add_ps(dot);
            for (int i = vec; i < dim; i++) s += qg[i] * bf16_to_f32(kr[i]);
            const float scaled = s * scale;
            scores[(size_t)g * total + j] = scaled;
            if (scaled > best[g]) best[g] = scaled;
        }
    }
    for (int g = 0; g < group; g++) {
        float *sg = scores + (size_t)g * total;
        int j = 0;
        const __m512 shift = _mm512_set1_ps(best[g]);
        for (; j + 16 <= total; j += 16)
            _mm512_storeu_ps(sg + j, exp_ps(_mm512_sub_ps(_mm512_loadu_ps(sg + j), shift)));
        for (; j < total; j++) sg[j] = exp_scalar(sg[j] - best[g]);
        float total_sum = 0.0f;
        for (j = 0; j < total; j++) total_sum += sg[j];
        sum[g] = total_sum;
    }
    for (size_t i = 0; i < (size_t)group * dim; i++) acc[i] = 0.0f;
    for (int j = 0; j < total; j++) {
        const int slot = j < prefix ? j : extra[j - prefix];
        const uint16_t *vr = vbase + (size_t)slot * dim;
        for (int c = 0; c < chunks; c++)
            row_v[c] = _mm512_castsi512_ps(
                _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(vr + 16 * c))), 16));
        for (int g = 0; g < group; g++) {
            const float pj = scores[(size_t)g * total + j];
            const __m512 p = _mm512_set1_ps(pj);
            float *ag = acc + (size_t)g * dim;
            for (int c = 0; c < chunks; c++)
                _mm512_storeu_ps(ag + 16 * c, _mm512_fmadd_ps(p, row_v[c], _mm512_loadu_ps(ag + 16 * c)));
            for (int i = vec; i < dim; i++) ag[i] += pj * bf16_to_f32(vr[i]);
        }
    }
    for (int g = 0; g < group; g++) {
        const float inv = 1.0f / sum[g];
        for (int i = 0; i < dim; i++) out[(size_t)(h0 + g) * dim + i] = f32_to_bf16(acc[(size_t)g * dim + i] * inv);
    }
}

/* Attention of query `row` (of cache row `sequence`; the cache is [sequences][kv_heads][capacity][dim]
   bfloat16) for its heads h0 .. h1-1, which share one key/value head: each key and value is
   converted to float32 once for all of them (it was once per head).
   Per head the operations and their order are
   those of one head alone (float32 scores, max-subtracted softmax, weighted sum in cache order), so
   grouping changes speed only. work: 2 * (h1 - h0) * dim floats; scores: (h1 - h0) * (prefix +
   n_extra) floats. The common head sizes get their own copies, with the loops over a head unrolled. */
static void attend_heads(const layer_weights *L, const uint16_t *q, const uint16_t *keys, const uint16_t *values,
                         int capacity, int row, int sequence, int h0, int h1, int prefix, const int32_t *extra,
                         int n_extra, float scale, float *scores, float *work, uint16_t *out) {
    switch (L->head_dim) {
    case 64:
        attend_heads_dim(L, q, keys, values, capacity, row, sequence, h0, h1, prefix, extra, n_extra, scale, scores,
                         work, out, 64);
        break;
    case 128:
        attend_heads_dim(L, q, keys, values, capacity, row, sequence, h0, h1, prefix, extra, n_extra, scale, scores,
                         work, out, 128);
        break;
    default:
        attend_heads_dim(L, q, keys, values, capacity, row, sequence, h0, h1, prefix, extra, n_extra, scale, scores,
                         work, out, L->head_dim);
    }
}

/* Phase 2, after the caller appended this forward's keys and values to the cache: attention for
   each row (query i sees cache slots [0, prefix[i]) then extra[extra_start[i] .. extra_start[i+1]) of
   cache row i / per_sequence: a batch's sequences each bring per_sequence rows), o projection,
   residual, post norm, SwiGLU MLP, residual; x [rows][hidden] is updated in place. */
int layer_rest(const layer_weights *L, uint16_t *x, int rows, int per_sequence, const uint16_t *q,
               const uint16_t *keys, const uint16_t *values, int slots, int capacity, const int32_t *prefix,
               const int32_t *extra_start, const int32_t *extra, float scale, int threads) {
    const int hd = L->heads * L->head_dim, hidden = L->hidden, inter = L->intermediate;
    if (L->head_dim > 1024 || per_sequence <= 0 || rows % per_sequence || capacity < slots) return 1;
    const size_t widest = (size_t)(hd > inter ? hd : inter) > (size_t)hidden ? (size_t)(hd > inter ? hd : inter)
                                                                            : (size_t)hidden;
    uint16_t *attn = malloc(sizeof(uint16_t) * (size_t)rows * hd);
    uint16_t *delta = malloc(sizeof(uint16_t) * (size_t)rows * hidden);
    uint16_t *normed = malloc(sizeof(uint16_t) * (size_t)rows * hidden);
    uint16_t *gate = malloc(sizeof(uint16_t) * (size_t)rows * inter);
    uint16_t *up = malloc(sizeof(uint16_t) * (size_t)rows * inter);
    uint16_t *wide = malloc(sizeof(uint16_t) * (size_t)rows * 2 * widest);
    int code = (!attn || !delta || !normed || !gate || !up || !wide) ? 2 : 0;
    if (!code) {
        /* one task per (row, key/value head, share of its query heads): heads that share a key/value
           head share its conversions; they are split only to give every thread work */
        const int group = L->heads / L->kv_heads, pairs = rows * L->kv_heads, team = threads > 0 ? threads : 1;
        int splits = pairs % team ? (2 * team + pairs - 1) / pairs : 1;
        if (splits < (group + ATTEND_GROUP_MAX - 1) / ATTEND_GROUP_MAX) splits = (group + ATTEND_GROUP_MAX - 1) / ATTEND_GROUP_MAX;
        if (splits > group) splits = group;
        const int widest_group = (group + splits - 1) / splits, tasks = pairs * splits;
        int failed = 0;
#pragma omp parallel num_threads(team)
        {
            float *scores = malloc(sizeof(float) * (size_t)widest_group * (size_t)(slots > 0 ? slots : 1));
            float *work = malloc(sizeof(float) * 2 * (size_t)widest_group * (size_t)L->head_dim);
            if (!scores || !work) {
#pragma omp atomic write
                failed = 1;
            } else {
#pragma omp for schedule(static)
                for (int t = 0; t < tasks; t++) {
                    const int row = t / (L->kv_heads * splits), kv = (t / splits) % L->kv_heads, part = t % splits;
                    const int h0 = kv * group + part * group / splits, h1 = kv * group + (part + 1) * group / splits;
                    attend_heads(L, q, keys, values, capacity, row, row / per_sequence, h0, h1, prefix[row],
                                 extra + extra_start[row], extra_start[row + 1] - extra_start[row], scale, scores,
                                 work, attn + (size_t)row * hd);
                }
            }
            free(scores);
            free(work);
        }
        code = failed ? 2 : linear(&L->o, attn, rows, delta, wide, threads);
        if (!code) {
            add_into(x, delta, (size_t)rows * hidden);
            rms_norm(x, L->post_norm, L->eps, normed, rows, hidden);
            code = linear(&L->gate, normed, rows, gate, wide, threads);
            if (!code) code = linear(&L->up, normed, rows, up, wide, threads);
        }
        if (!code) {
            /* SiLU(gate) rounded to bfloat16, then its product with up rounded: the model's two ops */
            const size_t count = (size_t)rows * inter;
            size_t i = 0;
            for (; i + 16 <= count; i += 16) {
                const __m512 g = _mm512_castsi512_ps(
                    _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(gate + i))), 16));
                const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), exp_ps(_mm512_sub_ps(
                                                                            _mm512_setzero_ps(), g))));
                float s[16];
                _mm512_storeu_ps(s, silu);
                for (int l = 0; l < 16; l++) gate[i + l] = f32_to_bf16(round_bf16(s[l]) * bf16_to_f32(up[i + l]));
            }
            for (; i < count; i++) {
                const float g = bf16_to_f32(gate[i]);
                gate[i] = f32_to_bf16(round_bf16(g / (1.0f + exp_scalar(-g))) * bf16_to_f32(up[i]));
            }
            code = linear(&L->down, gate, rows, delta, wide, threads);
        }
        if (!code) add_into(x, delta, (size_t)rows * hidden);
    }
    free(attn);
    free(delta);
    free(normed);
    free(gate);
    free(up);
    free(wide);
    return code;
}
