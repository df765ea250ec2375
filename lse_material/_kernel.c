/* Fused CPU kernel: energy, gradient and Hessian of an LSE-ICNN (docs/science.md §1) at many points.
 *
 * The same closed form as ICNNStack.hessian_parts + LSEICNN.derivatives (the torch path, which
 * stays the reference, the GPU path and the autograd path), fused per block of BLOCK points:
 * every intermediate lives in small block arrays laid out [unit][point], so the loops over
 * points are plain, independent and vectorised by the compiler, and nothing is written to
 * memory but the results. softplus and sigmoid share one exponential, computed (like log1p)
 * by branch-free polynomials accurate to a few ulp, so they vectorise too.
 *
 * Weights are in physical units (the input normalisation is folded in by the caller), packed
 * per mode as: for each layer j: A_j (h_j × d, row-major), b_j (h_j), and for j ≥ 1
 * B_j (h_j × h_{j-1}, ≥ 0); then b_out (h_K, ≥ 0), a_out (d), c (1).
 *
 * Returns 0, or a negative number for invalid sizes (checked by the caller beforehand).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 32
#define MAX_LAYERS 8
#define MAX_MODES 64

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLONES
#endif
#define INLINE static inline __attribute__((always_inline))

/* exp(x) for x <= 0 (0 below -708, where exp(x) < 3e-308): Cody–Waite reduction to
 * |r| <= ln2/2, degree-13 Taylor polynomial (truncation < 1e-17), then 2^k built in the exponent
 * bits. Branch-free and integer-light, so loops over points vectorise (AVX2 has no 64-bit
 * arithmetic shift or double-to-int64 conversion; both are avoided). */
INLINE double exp_nonpositive(double x) {
    const double shifter = 6755399441055744.0; /* 1.5 · 2^52: adding it rounds to an integer */
    double clamped = x < -708.0 ? -708.0 : x;
    double kf = (clamped * 1.4426950408889634 + shifter) - shifter;
    double r = clamped - kf * 6.93147180369123816490e-01 - kf * 1.90821492927058770002e-10;
    double p = 1.6059043836821613e-10;         /* 1/13! */
    p = p * r + 2.0876756987868100e-09;        /* 1/12! */
    p = p * r + 2.5052108385441720e-08;        /* 1/11! */
    p = p * r + 2.7557319223985893e-07;        /* 1/10! */
    p = p * r + 2.7557319223985888e-06;        /* 1/9! */
    p = p * r + 2.4801587301587302e-05;        /* 1/8! */
    p = p * r + 1.9841269841269841e-04;        /* 1/7! */
    p = p * r + 1.3888888888888889e-03;        /* 1/6! */
    p = p * r + 8.3333333333333332e-03;        /* 1/5! */
    p = p * r + 4.1666666666666664e-02;        /* 1/4! */
    p = p * r + 1.6666666666666666e-01;        /* 1/3! */
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    /* 2^k: the integer k + 1023 in [1, 1023] sits in the low mantissa bits of k + 1023 + 2^52;
     * a 52-bit left shift moves it into the exponent field. */
    double biased = kf + 1023.0 + 4503599627370496.0;
    uint64_t bits;
    memcpy(&bits, &biased, sizeof bits);
    bits <<= 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -708.0 ? 0.0 : p * scale;
}

/* log1p(e) for e in [0, 1] (the softplus of a = -|log e|): log((1 + e)/2^j) + j ln 2 with
 * j = 0 or 1 so the argument m is within [1/√2, √2], then 2 atanh(t), t = (m - 1)/(m + 1),
 * |t| <= 0.1716, odd series to t^23 (relative truncation < 1e-17). t is formed from e without
 * rounding 1 + e, so tiny e keep their relative accuracy. */
INLINE double log1p_unit(double e) {
    int high = e > 0.41421356237309503;
    double t = (high ? e - 1.0 : e) / (high ? e + 3.0 : e + 2.0);
    double t2 = t * t;
    double p = 1.0 / 23.0;
    p = p * t2 + 1.0 / 21.0;
    p = p * t2 + 1.0 / 19.0;
    p = p * t2 + 1.0 / 17.0;
    p = p * t2 + 1.0 / 15.0;
    p = p * t2 + 1.0 / 13.0;
    p = p * t2 + 1.0 / 11.0;
    p = p * t2 + 1.0 / 9.0;
    p = p * t2 + 1.0 / 7.0;
    p = p * t2 + 1.0 / 5.0;
    p = p * t2 + 1.0 / 3.0;
    p = p * t2 + 1.0;
    return 2.0 * t * p + (high ? 0.69314718055994531 : 0.0);
}

typedef struct {
    int64_t d, k, n_layers;
    const int64_t *width, *wrt;
} Shape;

/* Block arrays, [unit][point] (H = the widest layer): z, sg (σ'), sc (1 - σ') per layer
 * (L·H·BLOCK each), λ and u (H·BLOCK), and the pre-activation Jacobians G_j of the layers
 * j >= 1 ([layer][unit][input][point], L·H·K·BLOCK; G_0 = A_0 is not stored). */
typedef struct {
    double *z, *sg, *sc, *lam, *u, *G;
} Work;

#define AT(array, unit, p) (array)[(unit) * BLOCK + (p)]

/* One mode on one block of BLOCK points: energy W[p], gradient g[q][p], Hessian upper
 * triangle h[qr][p] (if want_hessian). x is [d][BLOCK]. */
INLINE void mode_block(const Shape *s, const Work *work, int64_t H, const double *w,
                       const double *x, int want_hessian, double *W, double *g, double *h) {
    double *restrict z = work->z, *restrict sg = work->sg, *restrict sc = work->sc;
    double *restrict lam = work->lam, *restrict u = work->u;
    const double *A[MAX_LAYERS], *b[MAX_LAYERS], *B[MAX_LAYERS];
    const int64_t d = s->d, k = s->k, L = s->n_layers;
    const double *cursor = w;
    for (int64_t j = 0; j < L; j++) {
        A[j] = cursor;
        cursor += s->width[j] * d;
        b[j] = cursor;
        cursor += s->width[j];
        B[j] = NULL;
        if (j > 0) {
            B[j] = cursor;
            cursor += s->width[j] * s->width[j - 1];
        }
    }
    const double *b_out = cursor, *a_out = cursor + s->width[L - 1];
    const double c = a_out[d];

    /* forward: a_j = A_j x + b_j + B_j z_{j-1};  z = softplus(a), σ' = sigmoid(a), 1 - σ';
     * with the Hessian also G_j = ∇a_j = B_j diag(σ'(a_{j-1})) G_{j-1} + A_j (G_0 = A_0). */
    double *restrict G = work->G;
    for (int64_t j = 0; j < L; j++) {
        if (want_hessian && j > 0) {
            const int64_t hp = s->width[j - 1];
            for (int64_t o = 0; o < s->width[j]; o++)
                for (int64_t q = 0; q < k; q++) {
                    double acc[BLOCK];
                    const double base = A[j][o * d + s->wrt[q]];
                    for (int p = 0; p < BLOCK; p++) acc[p] = base;
                    for (int64_t i = 0; i < hp; i++) {
                        const double coef = B[j][o * hp + i];
                        if (j == 1) {
                            const double g0 = coef * A[0][i * d + s->wrt[q]];
                            for (int p = 0; p < BLOCK; p++) acc[p] += g0 * AT(sg, i, p);
                        } else {
                            const double *Gp = G + ((j - 1) * H + i) * k * BLOCK;
                            for (int p = 0; p < BLOCK; p++)
                                acc[p] += coef * AT(sg, (j - 1) * H + i, p) * AT(Gp, q, p);
                        }
                    }
                    double *Gj = G + (j * H + o) * k * BLOCK;
                    for (int p = 0; p < BLOCK; p++) AT(Gj, q, p) = acc[p];
                }
        }
        for (int64_t o = 0; o < s->width[j]; o++) {
            double a[BLOCK];
            for (int p = 0; p < BLOCK; p++) a[p] = b[j][o];
            for (int64_t i = 0; i < d; i++) {
                const double coef = A[j][o * d + i];
                for (int p = 0; p < BLOCK; p++) a[p] += coef * x[i * BLOCK + p];
            }
            if (j > 0)
                for (int64_t i = 0; i < s->width[j - 1]; i++) {
                    const double coef = B[j][o * s->width[j - 1] + i];
                    for (int p = 0; p < BLOCK; p++) a[p] += coef * AT(z, (j - 1) * H + i, p);
                }
            for (int p = 0; p < BLOCK; p++) {
                double e = exp_nonpositive(-fabs(a[p]));
                double inv = 1.0 / (1.0 + e);
                int positive = a[p] >= 0.0;
                AT(sg, j * H + o, p) = (positive ? 1.0 : e) * inv;
                AT(sc, j * H + o, p) = (positive ? e : 1.0) * inv;
                AT(z, j * H + o, p) = (positive ? a[p] : 0.0) + log1p_unit(e);
            }
        }
    }
    for (int p = 0; p < BLOCK; p++) W[p] = c;
    for (int64_t i = 0; i < d; i++)
        for (int p = 0; p < BLOCK; p++) W[p] += a_out[i] * x[i * BLOCK + p];
    for (int64_t o = 0; o < s->width[L - 1]; o++)
        for (int p = 0; p < BLOCK; p++) W[p] += b_out[o] * AT(z, (L - 1) * H + o, p);

    /* backward: λ_K = b_out; u_j = λ_j σ'(a_j); ∇W += A_jᵀ u_j; λ_{j-1} = B_jᵀ u_j.
     * Hessian: Σ_j Σ_o u_jo (1 - σ'(a_jo)) G_jo ⊗ G_jo, upper triangle. */
    const int64_t n_pairs = k * (k + 1) / 2;
    for (int64_t q = 0; q < k; q++)
        for (int p = 0; p < BLOCK; p++) g[q * BLOCK + p] = a_out[s->wrt[q]];
    if (want_hessian)
        for (int64_t qr = 0; qr < n_pairs; qr++)
            for (int p = 0; p < BLOCK; p++) h[qr * BLOCK + p] = 0.0;
    for (int64_t o = 0; o < s->width[L - 1]; o++)
        for (int p = 0; p < BLOCK; p++) AT(lam, o, p) = b_out[o];
    for (int64_t j = L - 1; j >= 0; j--) {
        const int64_t hj = s->width[j];
        for (int64_t o = 0; o < hj; o++)
            for (int p = 0; p < BLOCK; p++) AT(u, o, p) = AT(lam, o, p) * AT(sg, j * H + o, p);
        for (int64_t o = 0; o < hj; o++)
            for (int64_t q = 0; q < k; q++) {
                const double coef = A[j][o * d + s->wrt[q]];
                for (int p = 0; p < BLOCK; p++) g[q * BLOCK + p] += coef * AT(u, o, p);
            }
        if (want_hessian) {
            if (j == 0) {
                for (int64_t o = 0; o < hj; o++) {
                    double wt[BLOCK];
                    for (int p = 0; p < BLOCK; p++) wt[p] = AT(u, o, p) * AT(sc, o, p);
                    int64_t qr = 0;
                    for (int64_t q = 0; q < k; q++)
                        for (int64_t r = q; r < k; r++, qr++) {
                            const double coef = A[0][o * d + s->wrt[q]] * A[0][o * d + s->wrt[r]];
                            for (int p = 0; p < BLOCK; p++) h[qr * BLOCK + p] += coef * wt[p];
                        }
                }
            } else {
                for (int64_t o = 0; o < hj; o++) {
                    double wt[BLOCK];
                    const double *Gj = G + (j * H + o) * k * BLOCK;
                    for (int p = 0; p < BLOCK; p++) wt[p] = AT(u, o, p) * AT(sc, j * H + o, p);
                    int64_t qr = 0;
                    for (int64_t q = 0; q < k; q++)
                        for (int64_t r = q; r < k; r++, qr++)
                            for (int p = 0; p < BLOCK; p++)
                                h[qr * BLOCK + p] += wt[p] * AT(Gj, q, p) * AT(Gj, r, p);
                }
            }
        }
        if (j > 0) {
            const int64_t hp = s->width[j - 1];
            for (int64_t i = 0; i < hp; i++)
                for (int p = 0; p < BLOCK; p++) AT(lam, i, p) = 0.0;
            for (int64_t o = 0; o < hj; o++)
                for (int64_t i = 0; i < hp; i++) {
                    const double coef = B[j][o * hp + i];
                    for (int p = 0; p < BLOCK; p++) AT(lam, i, p) += coef * AT(u, o, p);
                }
        }
    }
}
/* Entry (q, r) of Σ_n p_n (∇²W_n - ρ_n D_n D_nᵀ) over the block into acc: h holds the mode
 * Hessians' upper triangles (pair qr), D the mode gradients less their mean, p the weights,
 * rho_mode each mode's ρ. */
INLINE void mode_sum_entry(double *acc, int64_t n_modes, int64_t k, int64_t q, int64_t r,
                           int64_t qr, const double *D, const double *h, const double *pw,
                           const double *rho_mode) {
    const int64_t n_pairs = k * (k + 1) / 2;
    for (int p = 0; p < BLOCK; p++) acc[p] = 0.0;
    for (int64_t n = 0; n < n_modes; n++) {
        const double *Dq = D + (n * k + q) * BLOCK, *Dr = D + (n * k + r) * BLOCK;
        const double *hn = h + (n * n_pairs + qr) * BLOCK, *pn = pw + n * BLOCK;
        const double rho_n = rho_mode[n];
        for (int p = 0; p < BLOCK; p++) acc[p] += pn[p] * (hn[p] - rho_n * Dq[p] * Dr[p]);
    }
}

/* The nested LSE (groups of modes, each with its own ρ_g) on one block, after mode_block:
 * with l_n = log g_n - ρ_g(n) W_n, each group's inner minimum -ρ_g V_g = log Σ_{n∈g} exp l_n
 * and weights p_n|g = exp(l_n + ρ_g V_g); across groups P_g = softmax_g(-ρ V_g),
 * W = -(1/ρ) log Σ_g exp(-ρ V_g), p_n = P_g(n) p_n|g, ∇V_g = Σ_{n∈g} p_n|g ∇W_n,
 * ∇W = Σ_n p_n ∇W_n and ∇²W = Σ_n p_n (∇²W_n - ρ_g(n) D_n D_nᵀ) - ρ Σ_g P_g E_g E_gᵀ with
 * D_n = ∇W_n - ∇V_g(n), E_g = ∇V_g - ∇W (LSEICNN.derivatives, the torch reference). A group
 * without an evaluated mode (all closed) has weight 0. In: W (mode energies), g (gradients),
 * h (Hessian upper triangles), [mode][..][BLOCK]; W, g and pw are overwritten. Out: the first
 * m points of energy, gradient (m × k), hessian (m × k × k, if wanted), phase (m × N). */
typedef struct {
    int64_t n_groups;
    const int64_t *group;      /* (N,) the group of each evaluated mode */
    const double *group_rho;   /* (G,) */
    double *space;             /* G × (k + 3) × BLOCK */
} Nested;

INLINE void nested_mixture(const Nested *s, int64_t n_modes, int64_t k, int m,
                           const double *log_gate, double rho, double energy_scale,
                           double energy_shift, int want_hessian, double *W, double *g,
                           const double *h, double *pw, double *energy, double *gradient,
                           double *hessian, double *phase) {
    const int64_t G = s->n_groups;
    double *gv = s->space, *gtop = gv + G * k * BLOCK, *gsum = gtop + G * BLOCK;
    double *pg = gsum + G * BLOCK;
    int alive[MAX_MODES] = {0};
    for (int64_t n = 0; n < n_modes; n++) alive[s->group[n]] = 1;
    for (int64_t a = 0; a < G * BLOCK; a++) gtop[a] = -INFINITY, gsum[a] = 0.0;
    for (int64_t n = 0; n < n_modes; n++) { /* logits and each group's top */
        const double rho_g = s->group_rho[s->group[n]];
        double *top = gtop + s->group[n] * BLOCK, *l = W + n * BLOCK;
        for (int p = 0; p < BLOCK; p++) {
            l[p] = log_gate[n] - rho_g * l[p];
            top[p] = l[p] > top[p] ? l[p] : top[p];
        }
    }
    for (int64_t n = 0; n < n_modes; n++) {
        const double *top = gtop + s->group[n] * BLOCK;
        double *sum = gsum + s->group[n] * BLOCK;
        for (int p = 0; p < BLOCK; p++) {
            pw[n * BLOCK + p] = exp_nonpositive(W[n * BLOCK + p] - top[p]);
            sum[p] += pw[n * BLOCK + p];
        }
    }
    /* outer: -ρ V_g = (ρ/ρ_g) (top_g + log sum_g), kept in gtop; P_g in pg */
    double top[BLOCK], total[BLOCK];
    for (int p = 0; p < BLOCK; p++) top[p] = -INFINITY, total[p] = 0.0;
    for (int64_t c = 0; c < G; c++) {
        if (!alive[c]) continue;
        const double ratio = rho / s->group_rho[c];
        double *outer = gtop + c * BLOCK;
        for (int p = 0; p < BLOCK; p++) {
            outer[p] = ratio * (outer[p] + log(gsum[c * BLOCK + p]));
            top[p] = outer[p] > top[p] ? outer[p] : top[p];
        }
    }
    for (int64_t c = 0; c < G; c++)
        for (int p = 0; p < BLOCK; p++) {
            pg[c * BLOCK + p] = alive[c] ? exp_nonpositive(gtop[c * BLOCK + p] - top[p]) : 0.0;
            total[p] += pg[c * BLOCK + p];
        }
    for (int p = 0; p < m; p++)
        energy[p] = energy_scale * (-(top[p] + log(total[p])) / rho) + energy_shift;
    for (int p = 0; p < BLOCK; p++) total[p] = 1.0 / total[p];
    for (int64_t c = 0; c < G; c++)
        for (int p = 0; p < BLOCK; p++) pg[c * BLOCK + p] *= total[p];
    /* pw: p_n|g, then (in W) p_n = P_g p_n|g */
    for (int64_t n = 0; n < n_modes; n++) {
        const double *sum = gsum + s->group[n] * BLOCK, *P = pg + s->group[n] * BLOCK;
        for (int p = 0; p < BLOCK; p++) {
            pw[n * BLOCK + p] /= sum[p];
            W[n * BLOCK + p] = P[p] * pw[n * BLOCK + p];
        }
    }
    for (int p = 0; p < m; p++)
        for (int64_t n = 0; n < n_modes; n++) phase[p * n_modes + n] = W[n * BLOCK + p];
    for (int64_t q = 0; q < k; q++) {
        double mean[BLOCK];
        for (int p = 0; p < BLOCK; p++) mean[p] = 0.0;
        for (int64_t a = 0; a < G * BLOCK; a++) gv[q * G * BLOCK + a] = 0.0;
        for (int64_t n = 0; n < n_modes; n++) {
            const double *gq = g + (n * k + q) * BLOCK;
            double *vq = gv + (q * G + s->group[n]) * BLOCK;
            for (int p = 0; p < BLOCK; p++) {
                mean[p] += W[n * BLOCK + p] * gq[p];
                vq[p] += pw[n * BLOCK + p] * gq[p];
            }
        }
        for (int p = 0; p < m; p++) gradient[p * k + q] = energy_scale * mean[p];
        for (int64_t n = 0; n < n_modes; n++) { /* D_n = ∇W_n - ∇V_g(n) */
            double *gq = g + (n * k + q) * BLOCK;
            const double *vq = gv + (q * G + s->group[n]) * BLOCK;
            for (int p = 0; p < BLOCK; p++) gq[p] -= vq[p];
        }
        for (int64_t c = 0; c < G; c++) /* E_g = ∇V_g - ∇W */
            for (int p = 0; p < BLOCK; p++) gv[(q * G + c) * BLOCK + p] -= mean[p];
    }
    if (!want_hessian) return;
    double rho_mode[MAX_MODES];
    for (int64_t n = 0; n < n_modes; n++) rho_mode[n] = s->group_rho[s->group[n]];
    int64_t qr = 0;
    for (int64_t q = 0; q < k; q++)
        for (int64_t r = q; r < k; r++, qr++) {
            double acc[BLOCK];
            mode_sum_entry(acc, n_modes, k, q, r, qr, g, h, W, rho_mode);
            for (int64_t c = 0; c < G; c++) {
                const double *Eq = gv + (q * G + c) * BLOCK, *Er = gv + (r * G + c) * BLOCK;
                const double *P = pg + c * BLOCK;
                for (int p = 0; p < BLOCK; p++) acc[p] -= rho * P[p] * Eq[p] * Er[p];
            }
            for (int p = 0; p < m; p++) {
                hessian[(p * k + q) * k + r] = energy_scale * acc[p];
                hessian[(p * k + r) * k + q] = energy_scale * acc[p];
            }
        }
}

CLONES
int lse_icnn_derivatives(int64_t n_points, int64_t d, const double *x, int64_t k,
                         const int64_t *wrt, int64_t n_modes, int64_t n_layers,
                         const int64_t *width, int64_t mode_stride, const double *weights,
                         const double *log_gate, double rho, int64_t n_groups,
                         const int64_t *group, const double *group_rho, double energy_scale,
                         double energy_shift, int64_t want_hessian, double *energy,
                         double *gradient, double *hessian, double *phase) {
    if (n_layers < 1 || n_layers > MAX_LAYERS || k < 1 || k > d || n_modes < 1 ||
        n_modes > MAX_MODES || n_groups < 0 || n_groups > MAX_MODES)
        return -1;
    for (int64_t n = 0; n < n_modes && n_groups > 0; n++)
        if (group[n] < 0 || group[n] >= n_groups) return -1;
    int64_t H = 0;
    for (int64_t j = 0; j < n_layers; j++) {
        if (width[j] < 1) return -1;
        H = width[j] > H ? width[j] : H;
    }
    const Shape shape = {d, k, n_layers, width, wrt};
    const int64_t n_pairs = k * (k + 1) / 2;
    double *W = malloc(sizeof(double) * n_modes * BLOCK);
    double *g = malloc(sizeof(double) * n_modes * k * BLOCK);
    double *h = malloc(sizeof(double) * n_modes * n_pairs * BLOCK);
    double *xb = malloc(sizeof(double) * d * BLOCK);
    double *space = malloc(sizeof(double) * BLOCK * H * (3 * n_layers + 2 + n_layers * k));
    double *mean = malloc(sizeof(double) * k * BLOCK);
    double *pw = malloc(sizeof(double) * n_modes * BLOCK);
    /* nested LSE only: per group its gradient ∇V_g (k × BLOCK), then top, sum, weight P_g */
    double *gs = n_groups ? malloc(sizeof(double) * n_groups * (k + 3) * BLOCK) : NULL;
    if (!W || !g || !h || !xb || !space || !mean || !pw || (n_groups && !gs)) {
        free(W), free(g), free(h), free(xb), free(space), free(mean), free(pw), free(gs);
        return -2;
    }
    const Nested nested = {n_groups, group, group_rho, gs};
    double rho_mode[MAX_MODES]; /* the single ρ of every mode (nested: set per group) */
    for (int64_t n = 0; n < n_modes; n++) rho_mode[n] = rho;
    const int64_t layer_block = n_layers * H * BLOCK;
    Work work = {space,
                 space + layer_block,
                 space + 2 * layer_block,
                 space + 3 * layer_block,
                 space + 3 * layer_block + H * BLOCK,
                 space + 3 * layer_block + 2 * H * BLOCK};
    for (int64_t start = 0; start < n_points; start += BLOCK) {
        const int m = (int)(n_points - start < BLOCK ? n_points - start : BLOCK);
        for (int64_t i = 0; i < d; i++)
            for (int p = 0; p < BLOCK; p++)
                xb[i * BLOCK + p] = p < m ? x[(start + p) * d + i] : x[start * d + i];
        for (int64_t n = 0; n < n_modes; n++)
            mode_block(&shape, &work, H, weights + n * mode_stride, xb, (int)want_hessian,
                       W + n * BLOCK, g + n * k * BLOCK, h + n * n_pairs * BLOCK);
        if (n_groups) {
            nested_mixture(&nested, n_modes, k, m, log_gate, rho, energy_scale, energy_shift,
                           (int)want_hessian, W, g, h, pw, energy + start,
                           gradient + start * k, want_hessian ? hessian + start * k * k : NULL,
                           phase + start * n_modes);
            continue;
        }
        /* mixture, vectorised over the block: p_n = softmax_n(log g_n - ρ W_n),
         * W = -(1/ρ) log Σ_n exp(log g_n - ρ W_n), ∇W = Σ p_n ∇W_n,
         * ∇²W = Σ p_n (∇²W_n - ρ D_n D_nᵀ) with D_n = ∇W_n - ∇W. */
        double top[BLOCK], total[BLOCK];
        for (int p = 0; p < BLOCK; p++) top[p] = -INFINITY, total[p] = 0.0;
        for (int64_t n = 0; n < n_modes; n++)
            for (int p = 0; p < BLOCK; p++) {
                double l = log_gate[n] - rho * W[n * BLOCK + p];
                W[n * BLOCK + p] = l;
                top[p] = l > top[p] ? l : top[p];
            }
        for (int64_t n = 0; n < n_modes; n++)
            for (int p = 0; p < BLOCK; p++) {
                pw[n * BLOCK + p] = exp_nonpositive(W[n * BLOCK + p] - top[p]);
                total[p] += pw[n * BLOCK + p];
            }
        for (int p = 0; p < m; p++)
            energy[start + p] =
                energy_scale * (-(top[p] + log(total[p])) / rho) + energy_shift;
        for (int p = 0; p < BLOCK; p++) total[p] = 1.0 / total[p];
        for (int64_t n = 0; n < n_modes; n++)
            for (int p = 0; p < BLOCK; p++) pw[n * BLOCK + p] *= total[p];
        for (int64_t q = 0; q < k; q++) {
            double *mq = mean + q * BLOCK;
            for (int p = 0; p < BLOCK; p++) mq[p] = 0.0;
            for (int64_t n = 0; n < n_modes; n++)
                for (int p = 0; p < BLOCK; p++)
                    mq[p] += pw[n * BLOCK + p] * g[(n * k + q) * BLOCK + p];
            for (int64_t n = 0; n < n_modes; n++)
                for (int p = 0; p < BLOCK; p++) g[(n * k + q) * BLOCK + p] -= mq[p];
            for (int p = 0; p < m; p++) gradient[(start + p) * k + q] = energy_scale * mq[p];
        }
        for (int p = 0; p < m; p++)
            for (int64_t n = 0; n < n_modes; n++)
                phase[(start + p) * n_modes + n] = pw[n * BLOCK + p];
        if (!want_hessian) continue;
        int64_t qr = 0;
        for (int64_t q = 0; q < k; q++)
            for (int64_t r = q; r < k; r++, qr++) {
                double acc[BLOCK];
                mode_sum_entry(acc, n_modes, k, q, r, qr, g, h, pw, rho_mode);
                for (int p = 0; p < m; p++) {
                    hessian[((start + p) * k + q) * k + r] = energy_scale * acc[p];
                    hessian[((start + p) * k + r) * k + q] = energy_scale * acc[p];
                }
            }
    }
    free(W), free(g), free(h), free(xb), free(space), free(mean), free(pw), free(gs);
    return 0;
}
