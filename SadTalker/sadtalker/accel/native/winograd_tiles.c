/* Winograd F(4x4, 3x3) tile transforms for nets/winograd.py, fused with the tile gather and scatter.

   The channel mixing (one batched GEMM per tile position) stays in torch; what is done here is the memory-bound
   part that pure PyTorch does in several passes over large temporaries: gathering the overlapping 6x6 input tiles
   (with the zero padding) and applying B^T . B; applying A^T . A to the products and scattering the 4x4 output
   tiles (plus the bias) into the output. Each is one pass over its data, computed on vectors of 8 neighbouring
   tiles of a tile row. Threads: OpenMP over channels; built with -fopenmp this resolves to the libgomp that torch
   has already loaded, so the threads are torch's own (no second pool spinning against it).

   Layouts (float32; element strides):
     x    input of one batch item, (C, D, H, W) with strides xs[4]
     v    transformed input, v[k * 36 * DP * R * TW + ...], by channel: v[c][k][(s * R + i) * TW + t]
     mm   products, by channel: mm[o][k][(z * R + i) * TW + t]
   (channel-major, so that each channel's 36 planes are one block: the products are read in one sweep; the
   GEMMs take these layouts as strided batches)
     out  output of one batch item, (O, D, H, W) contiguous
   for the band of tile rows t0 .. t0 + R - 1, TW tiles per row, DP = D + taps - 1 depth slices (slice s reads
   input slice s - taps / 2; slices outside the input are zero).
*/
#include <string.h>
#ifdef __AVX__
#include <immintrin.h>
#endif

#define M 4                 /* output tile */
#define N 6                 /* input tile, M + 3 - 1 */
#define L 8                 /* tiles per vector */

typedef float vec __attribute__((vector_size(L * sizeof(float))));
typedef float vec_unaligned __attribute__((vector_size(L * sizeof(float)), aligned(sizeof(float))));

static inline vec load(const float *p) { return *(const vec_unaligned *)p; }
static inline void store(float *p, vec v) { *(vec_unaligned *)p = v; }

/* the first n (< L) values of p, zeros after */
static inline vec load_part(const float *p, long n)
{
    float buf[L] = {0};
    memcpy(buf, p, sizeof(float) * n);
    return load(buf);
}

static inline void store_part(float *p, vec v, long n)
{
    if (n >= L) {
        store(p, v);
        return;
    }
    float buf[L];
    store(buf, v);
    memcpy(p, buf, sizeof(float) * n);
}

/* Writes r[c][j] to dst[M * j + c] for the first n of the M * L values (the tiles' rows side by side). */
static inline void interleave_store(float *dst, const vec r[M], long n)
{
#ifdef __AVX__
    if (n == M * L) {
        __m256 r0 = (__m256)r[0], r1 = (__m256)r[1], r2 = (__m256)r[2], r3 = (__m256)r[3];
        __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
        __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
        __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u1, 0x20));
        _mm256_storeu_ps(dst + 8, _mm256_permute2f128_ps(u2, u3, 0x20));
        _mm256_storeu_ps(dst + 16, _mm256_permute2f128_ps(u0, u1, 0x31));
        _mm256_storeu_ps(dst + 24, _mm256_permute2f128_ps(u2, u3, 0x31));
        return;
    }
#endif
    float buf[M * L];
    for (int j = 0; j < L; j++)
        for (int c = 0; c < M; c++)
            buf[M * j + c] = r[c][j];
    memcpy(dst, buf, sizeof(float) * n);
}

/* Input tiles: v[k = a * 6 + b] = (B^T d B)[a][b] for every 6x6 input tile d, bt = B^T (6 x 6, row major). */
void winograd_input_tiles(const float *x, const long *xs, long C, long D, long H, long W,
                          long t0, long R, long TW, long taps, const float *bt, float *v, int threads)
{
    const long DP = D + taps - 1, tiles = R * TW, plane = DP * tiles;
    const long TP = (TW + L - 1) / L * L + 2;   /* per phase: tile columns -1 .. TW (whole vectors) */
    float b_[N][N];
    memcpy(b_, bt, sizeof b_);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long c = 0; c < C; c++) {
        float ph[N][M][TP];     /* input rows of a tile row by column phase: ph[a][q][t + 1] = x[.., 4 t + q] */
        float vt[N][M][TP];     /* B^T applied down the six rows */
        for (long s = 0; s < DP; s++) {
            const long z = s - taps / 2;
            float *vs = v + c * N * N * plane + s * tiles;
            if (z < 0 || z >= D) {
                for (long k = 0; k < N * N; k++)
                    memset(vs + k * plane, 0, sizeof(float) * tiles);
                continue;
            }
            const float *xz = x + c * xs[0] + z * xs[1];
            for (long i = 0; i < R; i++) {
                const long y0 = (t0 + i) * M - 1;
                for (long a = 0; a < N; a++) {
                    const long y = y0 + a;
                    if (y < 0 || y >= H) {
                        memset(ph[a], 0, sizeof(ph[a]));
                        continue;
                    }
                    const float *row = xz + y * xs[2];
                    for (long t = -1; t < TP - 1; t++)
                        for (long q = 0; q < M; q++) {
                            const long col = M * t + q;
                            ph[a][q][t + 1] = (col >= 0 && col < W) ? row[col * xs[3]] : 0.0f;
                        }
                }
                for (long a = 0; a < N; a++) {
                    float *restrict dst = &vt[a][0][0];
                    const float *restrict p0 = &ph[0][0][0], *restrict p1 = &ph[1][0][0];
                    const float *restrict p2 = &ph[2][0][0], *restrict p3 = &ph[3][0][0];
                    const float *restrict p4 = &ph[4][0][0], *restrict p5 = &ph[5][0][0];
                    for (long e = 0; e < M * TP; e++)
                        dst[e] = b_[a][0] * p0[e] + b_[a][1] * p1[e] + b_[a][2] * p2[e] + b_[a][3] * p3[e]
                                 + b_[a][4] * p4[e] + b_[a][5] * p5[e];
                }
                float *vi = vs + i * TW;
                for (long t = 0; t < TW; t += L) {
                    const long n = TW - t;
                    for (int a = 0; a < N; a++) {
                        /* input column 4 t - 1 + j: phase 3 of tile t - 1, phases 0..3 of t, phase 0 of t + 1 */
                        const vec d[N] = {load(&vt[a][3][t]), load(&vt[a][0][t + 1]), load(&vt[a][1][t + 1]),
                                          load(&vt[a][2][t + 1]), load(&vt[a][3][t + 1]), load(&vt[a][0][t + 2])};
                        for (int b = 0; b < N; b++) {
                            vec acc = d[0] * b_[b][0];
                            for (int j = 1; j < N; j++)
                                acc += d[j] * b_[b][j];
                            store_part(vi + (a * N + b) * plane + t, acc, n);
                        }
                    }
                }
            }
        }
    }
}

/* Output tiles: out tile = A^T m A (+ bias), at = A^T (4 x 6, row major); rows and columns beyond H, W (the last
   tiles' padding) are dropped. */
void winograd_output_tiles(const float *mm, long O, long D, long H, long W, long t0, long R, long TW,
                           const float *at, const float *bias, float *out, int threads)
{
    const long tiles = R * TW, plane = D * tiles;
    float a_[M][N];
    memcpy(a_, at, sizeof a_);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long o = 0; o < O; o++) {
        const float b0 = bias ? bias[o] : 0.0f;
        for (long z = 0; z < D; z++)
            for (long i = 0; i < R; i++) {
                const float *mi = mm + o * N * N * plane + z * tiles + i * TW;
                const long y0 = (t0 + i) * M;
                const long rows = H - y0 < M ? H - y0 : M;
                float *orow = out + ((o * D + z) * H + y0) * W;
                for (long t = 0; t < TW; t += L) {
                    const long n = TW - t;
                    vec h[M][N];        /* A^T applied down the tile: h[a][b] */
                    for (int b = 0; b < N; b++) {
                        vec mk[N];
                        for (int k = 0; k < N; k++)
                            mk[k] = n >= L ? load(mi + (k * N + b) * plane + t)
                                           : load_part(mi + (k * N + b) * plane + t, n);
                        for (int a = 0; a < M; a++) {
                            vec acc = mk[0] * a_[a][0];
                            for (int k = 1; k < N; k++)
                                acc += mk[k] * a_[a][k];
                            h[a][b] = acc;
                        }
                    }
                    const long cols = W - M * t < M * L ? W - M * t : M * L;
                    for (long a = 0; a < rows; a++) {
                        vec r[M];
                        for (int c = 0; c < M; c++) {
                            vec acc = h[a][0] * a_[c][0] + b0;
                            for (int b = 1; b < N; b++)
                                acc += h[a][b] * a_[c][b];
                            r[c] = acc;
                        }
                        interleave_store(orow + a * W + M * t, r, cols);
                    }
                }
            }
    }
}
