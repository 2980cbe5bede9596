/* Lawson-Hanson NNLS on a Gram matrix, one problem after another (the loop over the batch in C).

   Lawson & Hanson, Solving Least Squares Problems (SIAM 1995), ch. 23, algorithm NNLS, run on
   the normal equations of a column-normalised problem: G = ÃᵀÃ (n x n), b = Ãᵀy per row. The
   passive set P is kept with the Cholesky factor L of G_PP (G_PP = L Lᵀ): an add appends a row
   (its pivot d = G_jj - |L⁻¹ g|² is the squared distance of column j to span(Ã_P); d <= dtol G_jj
   marks j dependent and skips it until P shrinks), a remove deletes a row and restores the
   triangle by Givens rotations. Each solve takes one step of iterative refinement.

   lh_gram(B, n, G, b, thr, x, steps, stopped, max_steps, dtol)
     x       (B, n) in: a feasible start (x >= 0; its support is loaded as P), out: the answer
     steps   (B,)  out: LH steps taken (adds + removes)
     stopped (B,)  out: 1 where the KKT rule stopped LH (max_j w_j <= thr_i off P), 0 at max_steps
   Returns 0, or -1 when the workspace cannot be allocated. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int n, np;
    const double *G;
    double *L, *s, *u, *r, *w;
    int *P;
    char *inP, *blocked;
} row_t;

static void lower_solve(const row_t *t, const double *rhs, double *out) {
    int n = t->n, k = t->np;
    for (int i = 0; i < k; i++) {
        double v = rhs[i];
        for (int l = 0; l < i; l++) v -= t->L[i * n + l] * out[l];
        out[i] = v / t->L[i * n + i];
    }
}

static void upper_solve(const row_t *t, double *v) {
    int n = t->n, k = t->np;
    for (int i = k - 1; i >= 0; i--) {
        double a = v[i];
        for (int l = i + 1; l < k; l++) a -= t->L[l * n + i] * v[l];
        v[i] = a / t->L[i * n + i];
    }
}

/* s_P = G_PP⁻¹ b_P, refined once: s += G_PP⁻¹ (b_P - G_PP s). */
static void solve_passive(row_t *t, const double *b) {
    int n = t->n, k = t->np;
    for (int i = 0; i < k; i++) t->r[i] = b[t->P[i]];
    lower_solve(t, t->r, t->s);
    upper_solve(t, t->s);
    for (int i = 0; i < k; i++) {
        double v = b[t->P[i]];
        const double *Gi = t->G + (size_t)t->P[i] * n;
        for (int l = 0; l < k; l++) v -= Gi[t->P[l]] * t->s[l];
        t->r[i] = v;
    }
    lower_solve(t, t->r, t->u);
    upper_solve(t, t->u);
    for (int i = 0; i < k; i++) t->s[i] += t->u[i];
}

/* Append column j to P if independent of the columns in P; returns 1 if added. */
static int try_add(row_t *t, int j, double dtol) {
    int n = t->n, k = t->np;
    const double *Gj = t->G + (size_t)j * n;
    for (int i = 0; i < k; i++) t->r[i] = Gj[t->P[i]];
    lower_solve(t, t->r, t->u);
    double d = Gj[j];
    for (int i = 0; i < k; i++) d -= t->u[i] * t->u[i];
    if (!(d > dtol * Gj[j])) return 0;
    for (int i = 0; i < k; i++) t->L[k * n + i] = t->u[i];
    t->L[k * n + k] = sqrt(d);
    t->P[k] = j;
    t->inP[j] = 1;
    t->np = k + 1;
    return 1;
}

/* Delete position p of P: drop row p of L, then rotate columns back to a lower triangle. */
static void remove_at(row_t *t, int p) {
    int n = t->n, k = t->np;
    t->inP[t->P[p]] = 0;
    for (int i = p; i < k - 1; i++) {
        t->P[i] = t->P[i + 1];
        memcpy(t->L + (size_t)i * n, t->L + (size_t)(i + 1) * n, (size_t)k * sizeof(double));
    }
    for (int c = p; c < k - 1; c++) {
        double a = t->L[c * n + c], e = t->L[c * n + c + 1], h = sqrt(a * a + e * e); /* |L| <= 1: no overflow */
        double cs = a / h, sn = e / h;
        for (int i = c; i < k - 1; i++) {
            double x1 = t->L[i * n + c], x2 = t->L[i * n + c + 1];
            t->L[i * n + c] = cs * x1 + sn * x2;
            t->L[i * n + c + 1] = cs * x2 - sn * x1;
        }
    }
    t->np = k - 1;
}

/* One problem: returns LH steps taken; *stop = 1 when the KKT rule ended it. */
static int lh_row(row_t *t, const double *b, double thr, double *x, int max_steps, double dtol, int *stop) {
    int n = t->n, steps = 0, last_added = -1;
    t->np = 0;
    memset(t->inP, 0, (size_t)n);
    memset(t->blocked, 0, (size_t)n);
    for (;;) { /* load the start's support, largest entries first */
        int j = -1;
        for (int i = 0; i < n; i++)
            if (x[i] > 0 && !t->inP[i] && !t->blocked[i] && (j < 0 || x[i] > x[j])) j = i;
        if (j < 0) break;
        if (!try_add(t, j, dtol)) t->blocked[j] = 1;
    }
    for (int i = 0; i < n; i++)
        if (!t->inP[i]) x[i] = 0.0;
    memset(t->blocked, 0, (size_t)n);
    *stop = 0;
    while (steps < max_steps) {
        if (t->np > 0) { /* inner loop: solve on P, move towards s, drop what reaches zero */
            solve_passive(t, b);
            int feasible = 1;
            for (int i = 0; i < t->np; i++)
                if (!(t->s[i] > 0)) feasible = 0;
            if (!feasible) {
                double alpha = 1.0;
                int first = -1;
                for (int i = 0; i < t->np; i++) {
                    if (t->s[i] > 0) continue;
                    double xi = x[t->P[i]], a = xi - t->s[i] > 0 ? xi / (xi - t->s[i]) : 0.0;
                    if (first < 0 || a < alpha) alpha = a, first = i;
                }
                if (alpha < 0) alpha = 0;
                for (int i = 0; i < t->np; i++) {
                    int j = t->P[i];
                    x[j] += alpha * (t->s[i] - x[j]);
                    if (x[j] < 0) x[j] = 0;
                }
                int dropped = t->P[first];
                x[dropped] = 0.0;
                for (int i = t->np - 1; i >= 0; i--)
                    if (x[t->P[i]] <= 0) remove_at(t, i);
                memset(t->blocked, 0, (size_t)n); /* P shrank: skipped columns may be independent again */
                if (dropped == last_added && alpha == 0) t->blocked[dropped] = 1; /* rounding: no add/remove cycle */
                steps++;
                continue;
            }
            for (int i = 0; i < t->np; i++) x[t->P[i]] = t->s[i];
        }
        /* outer loop: w = b - G x, add the most violating independent j off P */
        for (int j = 0; j < n; j++) {
            double v = b[j];
            const double *Gj = t->G + (size_t)j * n;
            for (int i = 0; i < t->np; i++) v -= Gj[t->P[i]] * x[t->P[i]];
            t->w[j] = v;
        }
        int added = 0;
        for (;;) {
            int j = -1;
            for (int i = 0; i < n; i++)
                if (!t->inP[i] && !t->blocked[i] && (j < 0 || t->w[i] > t->w[j])) j = i;
            if (j < 0 || !(t->w[j] > thr)) break;
            if (try_add(t, j, dtol)) {
                added = 1;
                last_added = j;
                break;
            }
            t->blocked[j] = 1;
        }
        if (!added) {
            *stop = 1;
            break;
        }
        steps++;
    }
    return steps;
}

int lh_gram(int B, int n, const double *G, const double *b, const double *thr, double *x, int *steps, int *stopped,
            int max_steps, double dtol) {
    row_t t;
    t.n = n;
    t.G = G;
    t.L = malloc(sizeof(double) * ((size_t)n * n + 4 * (size_t)n));
    t.P = malloc(sizeof(int) * (size_t)n);
    t.inP = malloc((size_t)n);
    t.blocked = malloc((size_t)n);
    if (!t.L || !t.P || !t.inP || !t.blocked) {
        free(t.L), free(t.P), free(t.inP), free(t.blocked);
        return -1;
    }
    t.s = t.L + (size_t)n * n;
    t.u = t.s + n;
    t.r = t.u + n;
    t.w = t.r + n;
    for (int i = 0; i < B; i++)
        steps[i] = lh_row(&t, b + (size_t)i * n, thr[i], x + (size_t)i * n, max_steps, dtol, stopped + i);
    free(t.L), free(t.P), free(t.inP), free(t.blocked);
    return 0;
}
