"""The optimisation problems, with objectives and optimality certificates.

All functions act on row batches: X (batch, n), Y (batch, m); they return one value
per row. A certificate is zero exactly at an optimum and is scale-free, so that
``tol`` means the same thing for every problem.
"""

from __future__ import annotations

import torch

from .operators import DenseOperator, Operator


def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den with 0/0 = 0: a certificate is exactly zero where the residual is, at any scale.

    No absolute floor: a floor such as 1e-30 would declare every problem scaled below it solved.
    """
    return torch.where(num == 0, torch.zeros_like(num), num / den)


def row_norm(R: torch.Tensor) -> torch.Tensor:
    """‖r‖₂ per row without overflow or underflow of the squares (scaled by max |r|)."""
    peak = R.abs().amax(1, keepdim=True)
    safe = torch.where(peak > 0, peak, torch.ones_like(peak))
    return (R / safe).norm(dim=1) * peak.squeeze(1)


def column_norms(op: Operator, chunk: int = 256) -> torch.Tensor:
    """‖a_j‖₂ = ‖A e_j‖₂ of every column (n,), ``chunk`` columns at a time for a matrix-free
    operator; zero columns get 1 (they carry no signal)."""
    if isinstance(op, DenseOperator):
        c = row_norm(op.A.T)
    else:

        def basis(j):  # e_j, …, e_{j+chunk−1} as rows
            rows = torch.arange(j, min(j + chunk, op.n), device=op.device)
            E = torch.zeros(len(rows), op.n, dtype=op.dtype, device=op.device)
            return E.scatter_(1, rows.unsqueeze(1), 1.0)

        c = torch.cat([row_norm(op.forward(basis(j))) for j in range(0, op.n, chunk)])
    return torch.where(c > 0, c, torch.ones_like(c))


class NNLS:
    """min_x ½‖Ax − y‖²  s.t.  x ≥ 0   (xie2019 eq. 1.1, sen2024 eq. 1)."""

    name = "nnls"
    certified = "relative KKT residual (column-normalised)"

    def __init__(self, op: Operator):
        self.op = op
        self._cols = None

    def objective(self, X, Y):
        return 0.5 * (self.op.forward(X) - Y).pow(2).sum(1)

    @property
    def col_norms(self) -> torch.Tensor:
        """c_j = ‖a_j‖₂ (n,), cached; 1 for a zero column."""
        if self._cols is None:
            self._cols = column_norms(self.op)
        return self._cols

    def certificate(self, X, Y):
        """KKT residual of the column-normalised problem, relative to ‖y‖₂:

            max_j |min(c_j x_j, ∇f(x)_j / c_j)| / ‖y‖₂,   ∇f(x) = Aᵀ(Ax − y),  c_j = ‖a_j‖₂.

        This is the natural residual x̃ − P₊(x̃ − ∇̃f) of projected gradient (step 1) on the
        problem with unit-norm columns Ã = A diag(1/c), x̃ = c ⊙ x: zero iff x ≥ 0, ∇f ≥ 0
        and x ⊙ ∇f = 0 (the KKT conditions). Every term has the units of y, so the ratio is
        unchanged when A, y or any single column is rescaled. (Measured against ‖Aᵀy‖∞
        instead, one large column hides the gradient of a small one; an absolute floor
        declares every tiny problem solved.) 0/0 (y = 0 at x = 0) counts as 0.
        """
        c = self.col_norms
        grad = self.op.adjoint(self.op.forward(X) - Y)
        resid = torch.minimum(c * X, grad / c).abs().amax(1)
        return ratio(resid, row_norm(Y))


class Lasso:
    """min_z ½‖Dz − y‖² + λ‖z‖₁ (BPDN; sulam2018 eq. 1, Moreau talk); with ``positive``
    also z ≥ 0 (the non-negative Lasso: ½‖Dz − y‖² + λ1ᵀz on z ≥ 0).

    λ is scikit-learn's ``alpha`` × n_samples (n_samples = m, the length of y): sklearn
    minimises (1/2m)‖y − Dz‖² + α‖z‖₁, i.e. our objective divided by m, and its
    ``dual_gap_`` is our :meth:`duality_gap` / m.
    """

    name = "lasso"
    certified = "relative duality gap"

    def __init__(self, op: Operator, lam: float, positive: bool = False):
        self.op, self.lam, self.positive = op, float(lam), bool(positive)
        self._nnls = NNLS(op)

    def objective(self, Z, Y):
        return 0.5 * (self.op.forward(Z) - Y).pow(2).sum(1) + self.lam * Z.abs().sum(1)

    def lambda_max(self, Y):
        """λ_max = ‖Dᵀy‖∞ (max(Dᵀy)₊ when positive): z = 0 is optimal iff λ ≥ λ_max."""
        c = self.op.adjoint(Y)
        return c.clamp_min(0).amax(1) if self.positive else c.abs().amax(1)

    def dual_point(self, Z, Y):
        """Feasible dual ν = (y − Dz)/max(1, ‖Dᵀ(y − Dz)‖∞/λ) (λ > 0).

        The dual constraint is ‖Dᵀν‖∞ ≤ λ, or Dᵀν ≤ λ for the non-negative Lasso.
        """
        R = Y - self.op.forward(Z)
        corr = self.op.adjoint(R)
        corr = corr.clamp_min(0) if self.positive else corr.abs()
        scale = (corr.amax(1) / self.lam).clamp_min(1.0)
        return R / scale[:, None]

    def duality_gap(self, Z, Y):
        """P(z) − D(ν) ≥ 0, with D(ν) = ½‖y‖² − ½‖y − ν‖² for dual-feasible ν (λ > 0)."""
        return self._gap_and_objective(Z, Y)[0]

    def _gap_and_objective(self, Z, Y):
        """(P − D(ν), P) with ν = :meth:`dual_point`, from one residual y − Dz (one product each way)."""
        R = Y - self.op.forward(Z)
        corr = self.op.adjoint(R)
        corr = corr.clamp_min(0) if self.positive else corr.abs()
        nu = R / (corr.amax(1) / self.lam).clamp_min(1.0).unsqueeze(1)
        primal = 0.5 * R.pow(2).sum(1) + self.lam * Z.abs().sum(1)
        dual = 0.5 * Y.pow(2).sum(1) - 0.5 * (Y - nu).pow(2).sum(1)
        return primal - dual, primal

    def certificate(self, Z, Y):
        """Relative duality gap (P − D)/P: bounds the relative sub-optimality (P − P*)/P.

        Invariant to scaling D, y and λ together (D → sD, y → ty, λ → stλ). For λ = 0
        the scaled residual is dual-feasible only at an exact fit, so the gap never
        certifies; the column-normalised stationarity residual of :class:`NNLS` is used
        instead (its KKT residual when ``positive``, max_j |∇f_j|/‖d_j‖ / ‖y‖ otherwise).
        A non-negative Lasso iterate with a negative entry is infeasible: certificate ∞.
        """
        if self.lam == 0:
            if self.positive:
                return self._nnls.certificate(Z, Y)
            c = self._nnls.col_norms
            grad = self.op.adjoint(self.op.forward(Z) - Y) / c
            return ratio(grad.abs().amax(1), row_norm(Y))
        gap, primal = self._gap_and_objective(Z, Y)
        cert = ratio(gap.clamp_min(0), primal)
        if self.positive:
            cert = torch.where((Z < 0).any(1), torch.full_like(cert, float("inf")), cert)
        return cert


class MLBP:
    """Multi-layer basis pursuit (sulam2018 eq. 6; P_ML for L = 2):

        F(γ) = ½‖y − D_(1,L)γ‖² + Σ_{i=1}^{L−1} λ_i ‖D_(i+1,L)γ‖₁ + λ_L‖γ‖₁,

    with D_(i,L) = D_i⋯D_L, D_i of shape (n_{i−1}, n_i), y ∈ R^{n_0}, γ = γ_L ∈ R^{n_L} and
    γ_i = D_(i+1,L)γ the intermediate representations.

    The problem also owns the steps of the ML-ISTA map T (sulam2018 eq. 5 / Algorithm 2,
    in the proximal-gradient-mapping form of the TPAMI version, sulam2019 talk "Multi-Layer
    ISTA"), because its fixed points depend on them. With η_i the step of layer i and
    μ_i = η_1⋯η_i, z_0 = y and γ̂_i = D_(i+1,L)γ:

        z_i = ST(γ̂_i − η_i D_iᵀ(γ̂_{i−1} − z_{i−1}), μ_i λ_i),   i = 1..L,   T(γ) = z_L.

    For L = 2 this is γ⁺ = ST_{tλ₂}(γ − (t/μ) D₂ᵀ(γ₁ − ST_{μλ₁}(γ₁ − μD₁ᵀ(D₁γ₁ − y)))),
    μ = μ_1, t = μ_2. Default steps η_i = ``mu_scale``·1/‖D_1‖² for i = 1 and 1/‖D_i‖²
    otherwise, i.e. μ = mu_scale/‖D₁‖² ∈ (0, 1/‖D₁‖²] and t = μ/‖D₂‖², inside TPAMI's
    t ∈ (0, 4μ/(3‖D₂‖²)); for more layers each μ_i = μ_{i−1}/‖D_i‖² keeps every nested map
    averaged. The fixed point of T is *not* exactly the minimiser of F: the inner prox
    acts as a Moreau-type smoothing of the analysis terms, and TPAMI's theorem bounds the
    sub-optimality by O(μ) (measured in tests/test_mlbp.py; see :meth:`duality_gap`).
    """

    name = "ml-bp"
    certified = "ML-ISTA fixed-point residual (not the optimality of F)"

    def __init__(self, ops, lams, *, steps=None, mu_scale: float = 1.0):
        self.ops = list(ops)
        self.lams = [float(v) for v in lams]
        self.L = len(self.ops)
        if self.L == 0 or len(self.lams) != self.L:
            raise ValueError(f"need one λ per layer: {self.L} layers, {len(self.lams)} λ")
        if steps is None:
            if not 0 < float(mu_scale) <= 1:
                raise ValueError(f"mu_scale must be in (0, 1], got {mu_scale!r}")
            if any(op.lipschitz == 0 for op in self.ops):
                raise ValueError("a dictionary D_i is zero: ML-ISTA's default steps 1/‖D_i‖² are undefined")
            etas = [1.0 / op.lipschitz for op in self.ops]
            etas[0] *= float(mu_scale)
        else:
            etas = [float(s) for s in steps]
            if len(etas) != self.L or not all(s > 0 and s < float("inf") for s in etas):
                raise ValueError(f"steps must be {self.L} finite positive numbers, got {steps!r}")
        self.etas = etas
        mus, acc = [], 1.0
        for e in etas:
            acc *= e
            mus.append(acc)
        self.mus = mus  # μ_i = η_1⋯η_i: the threshold of layer i is μ_i λ_i

    # -- helpers ---------------------------------------------------------
    def chain(self, G):
        """[γ̂_0 = D_(1,L)γ, γ̂_1, …, γ̂_L = γ]: the representations of every layer."""
        from .algorithms.mlbp import representations

        return representations(self.ops, G)

    def objective(self, G, Y):
        hats = self.chain(G)
        val = 0.5 * (hats[0] - Y).pow(2).sum(1)
        for i in range(1, self.L + 1):
            if self.lams[i - 1] != 0:
                val = val + self.lams[i - 1] * hats[i].abs().sum(1)
        return val

    def ml_ista_map(self, G, Y, *, return_duals: bool = False):
        """T(γ) of the class docstring (one ML-ISTA iteration, sulam2018 Algorithm 2).

        With ``return_duals`` also returns w_i = (v_i − ST(v_i, μ_iλ_i))/μ_i ∈ [−λ_i, λ_i]
        (i < L), v_i the pre-threshold of layer i: the analysis sub-gradients used by
        :meth:`duality_gap`.
        """
        from .algorithms.mlbp import ml_ista_layers

        thresholds = [mu * lam for mu, lam in zip(self.mus, self.lams)]
        duals = []
        for i, (v, z) in enumerate(ml_ista_layers(self.chain(G), Y, self.ops, self.etas, thresholds), start=1):
            if return_duals and i < self.L:
                duals.append((v - z) / self.mus[i - 1])
        return (z, duals) if return_duals else z

    def scale(self, Y):
        """‖D_(1,L)ᵀy‖∞ per row: the size of the data gradient at γ = 0."""
        R = Y
        for op in self.ops:
            R = op.adjoint(R)
        return R.abs().amax(1)

    def certificate(self, G, Y):
        """Relative fixed-point residual of ML-ISTA: ‖γ − T(γ)‖∞ / (μ_L ‖D_(1,L)ᵀy‖∞).

        (γ − T(γ))/μ_L is the gradient mapping of the nested problem (TPAMI), so this is a
        gradient-sized quantity relative to the data gradient at 0; it is zero exactly at
        the fixed point of ML-ISTA / ML-FISTA with these steps (not at the exact minimiser
        of F, which differs by O(μ); use :meth:`duality_gap` to bound F(γ) − F*).
        """
        return ratio((G - self.ml_ista_map(G, Y)).abs().amax(1), self.mus[-1] * self.scale(Y))

    def dual_value(self, G, Y, W):
        """Dual bound of P_ML from ν = y − D_(1,L)γ and analysis duals w_i (|w_i| ≤ λ_i):

            max_{ν, w} yᵀν − ½‖ν‖²  s.t. ‖w_i‖∞ ≤ λ_i, ‖D_(1,L)ᵀν − Σ_i D_(i+1,L)ᵀw_i‖∞ ≤ λ_L

        (Fenchel dual of F). (ν, w) is scaled down by a common factor until feasible.
        """
        hats = self.chain(G)
        nu = Y - hats[0]
        W = [w.clamp(-lam, lam) for w, lam in zip(W, self.lams[:-1])]
        # S = D_(1,L)ᵀν − Σ D_(i+1,L)ᵀ w_i, accumulated from the top layer down
        S = nu
        for i, op in enumerate(self.ops):
            S = op.adjoint(S)
            if i < self.L - 1:
                S = S - W[i]
        lam_L = self.lams[-1]
        s = ratio(S.abs().amax(1), torch.full_like(S[:, 0], lam_L)).clamp_min(1.0)  # λ_L = 0: ν = 0 unless S = 0
        nu = nu / s[:, None]
        return (Y * nu).sum(1) - 0.5 * nu.pow(2).sum(1)

    def duality_gap(self, G, Y, W=None):
        """F(γ) − D(ν, w) ≥ F(γ) − F*: w from ML-ISTA's inner prox when not given."""
        if W is None:
            W = self.ml_ista_map(G, Y, return_duals=True)[1]
        return self.objective(G, Y) - self.dual_value(G, Y, W)

    def relative_gap(self, G, Y, W=None):
        """(F(γ) − D)/F(γ) ≥ (F(γ) − F*)/F(γ): a certificate of the stated problem (0/0 = 0)."""
        return ratio(self.duality_gap(G, Y, W).clamp_min(0), self.objective(G, Y))
