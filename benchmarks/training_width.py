"""How fast trained finite-width ensembles approach the infinite-width oracle (a measurement
script, not a test): the deviation of the trained mean and covariance from (μ_t, Σ_t) of
:func:`nngp_ppl.theory.ntk.training_oracle` against the width N = 8 .. 512, at an early and a
late step, with its log-log slope and the slope's standard error (expected -1: the first
finite-width correction to gradient-descent training is O(1/N)).

Estimator (variance-reduced, unbiased, noise-subtracted). For each network the linearised
prediction from its own initial outputs, :math:`f^{lin}_t(x) = f_0(x) + B_t(x)(Y - f_0(X))`
(``B_t`` from the infinite-width NTK), has :math:`E[f^{lin}_t] = \\mu_t` and
:math:`\\mathrm{Cov}(f^{lin}_t) = \\Sigma_t` *exactly at every width* (single hidden layer:
:math:`E f_0 = 0` and :math:`E[f_0 f_0'] = K` at every N). Hence

.. math:: E[f_t] - \\mu_t = E[f_t - f^{lin}_t],\\qquad
    \\mathrm{Cov}(f_t) - \\Sigma_t = E[c_t - c^{lin}_t],

(:math:`c` the centred products), both estimated on the same networks, where the O(1)
fluctuations of :math:`f_0` cancel. The deviation reported is the root mean square over the
test inputs (mean) or the test-input pairs (covariance) of the estimated differences
:math:`\\hat d_a`, *noise-subtracted*: :math:`D^2 = \\overline{\\hat d_a^2 - s_a^2}` with
:math:`s_a` the standard error of :math:`\\hat d_a` from the per-network spread, since
:math:`E[\\hat d_a^2] = d_a^2 + s_a^2` (the plain RMS is biased upwards by the noise, which
flattens the slope where the noise is comparable to the signal). ``se`` is the standard
error of D (delta method). The slope is a weighted least-squares fit of log D on log N with
weights :math:`(D/se)^2`; its standard error is the fit's (statistical only).

A second estimate of the power, free of the noise bias of squaring: the signed deviations
of all entries fitted jointly as :math:`d_a(N) = A_a N^p + B_a N^{p-1}` (the next order of
the finite-width expansion included), p profiled, its standard error from
:math:`\\Delta\\chi^2 = 1`. ``--lazy`` adds the lazy finite-width model (each network trained
as the linear model of its own initial NTK): the part of the deviation that the NTK's
fluctuation at initialisation explains; the rest comes from the NTK's change in training.

Two training setups (``--setup``):

* ``conditioned`` (default): Erf-net σ_W = 1, σ_b = 1, 3 training points x = -1.5, 0, 1.5,
  Θ_XX eigenvalues 0.37, 2.2, 5.0 (condition number 14), η = 0.5; early step 5 (the slow
  mode 27% trained), late step 200 (every mode trained to < 4e-6).
* ``paper`` (the previous session's): σ_b = 0.5, 4 points x = -1.2, -0.4, 0.5, 1.1, Θ_XX
  eigenvalues 0.051, 0.105, 2.17, 2.57 (condition number 50), η = 1, steps 10 and 300.

Measured numbers and what they mean: docs/training.md.

    python benchmarks/training_width.py                  # conditioned setup, N = 8..512
    python benchmarks/training_width.py --setup paper    # the ill-conditioned one
    python benchmarks/training_width.py --quick          # N = 8..128, fewer networks
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

SETUPS = {
    "conditioned": {"sigma_b": 1.0, "x_train": [-1.5, 0.0, 1.5],
                    "y_train": [0.6, -0.4, 0.5], "eta": 0.5, "steps": [0, 5, 200]},
    "paper": {"sigma_b": 0.5, "x_train": [-1.2, -0.4, 0.5, 1.1],
              "y_train": [0.5, -0.3, 0.2, 0.7], "eta": 1.0, "steps": [0, 10, 300]},
}


#: Candidate leading powers p (step 0.005).
POWERS = np.linspace(-2.0, -0.3, 341)


def noise_subtracted_rms(d, se):
    """(D, se_D): D^2 = mean(d^2 - se^2) (clipped at 0), se_D by the delta method."""
    d, se = np.ravel(d), np.ravel(se)
    d2 = np.mean(d * d - se * se)
    D = np.sqrt(max(d2, 0.0))
    se_d2 = np.sqrt(np.sum(4 * d * d * se * se + 2 * se**4)) / len(d)
    return D, se_d2 / (2 * D) if D > 0 else np.inf


def slope(widths, dev, se):
    """Weighted least-squares log-log slope and its standard error."""
    x, y = np.log(widths), np.log(dev)
    w = (np.asarray(dev) / np.asarray(se)) ** 2
    xm = np.sum(w * x) / np.sum(w)
    b = np.sum(w * (x - xm) * (y - np.sum(w * y) / np.sum(w))) / np.sum(w * (x - xm) ** 2)
    return b, 1.0 / np.sqrt(np.sum(w * (x - xm) ** 2))


def signed_deviations(out, f0, Bt, y_train, k):
    """Estimated signed deviations of one step's outputs (nets, k + n) from the oracle and
    their standard errors: ``(d_mean (k,), se, d_cov (k(k+1)/2,), se)``."""
    n_nets = out.shape[0]
    lin = f0[:, :k] + (y_train[None, :] - f0[:, k:]) @ Bt.T
    delta = out[:, :k] - lin
    ct, cl = out[:, :k] - out[:, :k].mean(0), lin - lin.mean(0)
    iu = np.triu_indices(k)
    dc = (ct[:, :, None] * ct[:, None, :] - cl[:, :, None] * cl[:, None, :])[:, iu[0], iu[1]]
    return (delta.mean(0), delta.std(0) / np.sqrt(n_nets), dc.mean(0),
            dc.std(0) / np.sqrt(n_nets))


def leading_power(widths, d, se, powers=POWERS):
    r"""The leading power p of signed deviations :math:`d_a(N) = A_a N^p + B_a N^{p-1}`
    (one p for all entries a, the next order of the finite-width expansion included), by
    weighted least squares (weights 1/se^2) profiled over p; ``(p, se_p, chi2, dof)``, se_p
    from :math:`\Delta\chi^2 = 1`. Signed, so no noise bias from squaring."""
    N = np.asarray(widths, float)[:, None]
    chi = []
    for p in powers:
        total = 0.0
        for a in range(d.shape[1]):
            M = np.stack([N[:, 0] ** p, N[:, 0] ** (p - 1)], 1) / se[:, a:a + 1]
            coef, *_ = np.linalg.lstsq(M, d[:, a] / se[:, a], rcond=None)
            total += np.sum((M @ coef - d[:, a] / se[:, a]) ** 2)
        chi.append(total)
    chi = np.asarray(chi)
    i = int(np.argmin(chi))
    inside = powers[chi <= chi[i] + 1.0]
    return powers[i], (inside.max() - inside.min()) / 2, chi[i], d.size - 2 * d.shape[1] - 1


def lazy_outputs(net, both, width, n_nets, seed, setup, eta, steps, k, y_train, f0):
    r"""The lazy finite-width model: each network trained as the linear model of its *own*
    NTK at initialisation, :math:`f^{lazy}_t = f_0 + \Theta_N(x, X) M_t(\Theta_N(X, X))
    (Y - f_0(X))`; (S, n_nets, k) at the test inputs. Its deviation from the oracle is the
    part that the NTK's fluctuation at initialisation explains; the rest of the trained
    networks' deviation comes from the NTK's change during training."""
    import jax
    import jax.numpy as jnp

    from nngp_ppl.theory.ntk import step_sum
    from nngp_ppl.training.trainer import _compiled_init, forward

    n = len(y_train)
    B = jnp.asarray(both.reshape(len(both), -1), jnp.float32)
    jac = jax.jit(jax.vmap(jax.jacrev(lambda p: forward(net, p, B, width, "ntk"))))
    out = np.zeros((len(steps), n_nets, k))
    block = 512
    for lo in range(0, n_nets, block):
        params, _ = _compiled_init(net, width, block, setup.compiled)(
            jnp.asarray(seed, jnp.int64), jnp.asarray(lo, jnp.uint32))
        J = np.concatenate([np.asarray(j, np.float64).reshape(block, len(both), -1)
                            for j in jac(params)], -1)[: n_nets - lo]
        TN = np.einsum("bip,bjp->bij", J, J)
        lam, W = np.linalg.eigh(TN[:, k:, k:])
        res = y_train[None, :] - f0[lo:lo + block, k:]
        for i, t in enumerate(steps):
            M = np.einsum("bij,bj,bkj->bik", W, step_sum(np.clip(lam, 0, None), eta / n, t),
                          W)
            out[i, lo:lo + block] = f0[lo:lo + block, :k] + np.einsum(
                "bij,bjk,bk->bi", TN[:, :k, k:], M, res)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--setup", choices=sorted(SETUPS), default="conditioned")
    parser.add_argument("--lazy", action="store_true",
                        help="also the lazy finite-width model (each network's own initial "
                             "NTK): how much of the deviation the NTK's change explains")
    parser.add_argument("--per-width", type=int, default=None,
                        help="networks per unit of width (at least 4096 per width)")
    args = parser.parse_args(argv)

    import nngp_ppl
    from nngp_ppl.theory.ntk import ntk_and_nngp, step_sum
    from nngp_ppl.training.trainer import trained_outputs

    s = SETUPS[args.setup]
    net = nngp_ppl.ErfNet(sigma_w=1.0, sigma_b=s["sigma_b"])
    X = np.array([-1.0, 0.3, 1.4])
    x_train, y_train = np.asarray(s["x_train"]), np.asarray(s["y_train"])
    eta, steps = s["eta"], s["steps"]
    widths = [8, 16, 32, 64, 128] if args.quick else [8, 16, 32, 64, 128, 256, 512]
    per_width = args.per_width or (32 if args.quick else 64)
    k, n = len(X), len(x_train)

    both = np.concatenate([X, x_train])
    theta, _ = ntk_and_nngp(net, both)
    lam, V = np.linalg.eigh(theta[k:, k:])
    left = [np.abs(1 - eta * lam / n) ** t for t in steps[1:]]
    print(f"setup {args.setup}: Erf-net sigma_w=1, sigma_b={s['sigma_b']}, {n} training "
          f"points, {k} test inputs, GD eta={eta}; Theta_XX eigenvalues {np.round(lam, 3)}; "
          "residual left per mode " + "; ".join(
              f"t={t}: {np.array2string(v, precision=2)}" for t, v in zip(steps[1:], left,
                                                                           strict=True)) +
          f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    Bs = [theta[:k, k:] @ (V * step_sum(lam, eta / n, t)) @ V.T for t in steps[1:]]
    signed = []  # per width, per late/early step: (d_mean, se, d_cov, se)
    for width in widths:
        n_nets = max(4096, per_width * width)
        t0 = time.process_time()
        out = trained_outputs(net, both, width, n_nets, x_train, y_train, steps, eta,
                              seed=width).astype(np.float64)
        per_step = [signed_deviations(out[i], out[0], Bt, y_train, k)
                    for i, Bt in enumerate(Bs, start=1)]
        signed.append(per_step)
        if args.lazy:
            from nngp_ppl.training.trainer import training_setup

            lazy = lazy_outputs(net, both, width, n_nets, width,
                                training_setup(net, x_train, y_train, steps, eta), eta,
                                steps[1:], k, y_train, out[0])
            for (d_tr, se_tr, *_), lz, Bt, t in zip(per_step, lazy, Bs, steps[1:],
                                                    strict=True):
                d_lz, se_lz, *_ = signed_deviations(
                    np.concatenate([lz, out[0][:, k:]], 1), out[0], Bt, y_train, k)
                print(f"    t={t}: N * mean deviation per test input, trained "
                      f"{np.round(width * d_tr, 3)} (N * se {np.round(width * se_tr, 3)}), "
                      f"lazy model {np.round(width * d_lz, 3)} "
                      f"(N * se {np.round(width * se_lz, 3)})", flush=True)
        print(f"N={width:4d} nets={n_nets:6d} cpu {time.process_time() - t0:6.1f}s  " +
              "  ".join(f"t={t}: |dmu|={noise_subtracted_rms(*q[:2])[0]:.2e} "
                        f"(se {noise_subtracted_rms(*q[:2])[1]:.1e}) "
                        f"|dSigma|={noise_subtracted_rms(*q[2:])[0]:.2e} "
                        f"(se {noise_subtracted_rms(*q[2:])[1]:.1e})"
                        for t, q in zip(steps[1:], per_step, strict=True)), flush=True)
    report(widths, steps[1:], signed)


def report(widths, steps, signed):
    """Slopes of the noise-subtracted RMS deviations and the leading power of the signed ones."""
    W = np.asarray(widths, float)
    for j, t in enumerate(steps):
        for name, col in (("mean", 0), ("covariance", 2)):
            d = np.stack([signed[i][j][col] for i in range(len(W))])
            se = np.stack([signed[i][j][col + 1] for i in range(len(W))])
            rms = np.array([noise_subtracted_rms(d[i], se[i]) for i in range(len(W))])
            ok = np.isfinite(rms[:, 1]) & (rms[:, 0] > 0)
            for lo in (0, 2):
                sel = ok & (W >= W[lo])
                b, sb = slope(W[sel], rms[sel, 0], rms[sel, 1])
                print(f"step {t:4d} {name:10s} RMS log-log slope over N = "
                      f"{int(W[sel][0])}..{int(W[sel][-1])}: {b:+.3f} +- {sb:.3f}")
            local = np.diff(np.log(rms[:, 0])) / np.diff(np.log(W))
            print(f"step {t:4d} {name:10s} local slopes between neighbouring N: " +
                  " ".join(f"{v:+.2f}" for v in local))
            p, sp, chi2, dof = leading_power(W, d, se)
            edge = (" -- at the edge of the searched range: the two-term model does not "
                    "describe these deviations" if p in (POWERS[0], POWERS[-1]) else "")
            print(f"step {t:4d} {name:10s} leading power of the signed deviations "
                  f"(A N^p + B N^(p-1), N = {int(W[0])}..{int(W[-1])}): p = {p:+.3f} +- "
                  f"{sp:.3f}, chi2 = {chi2:.1f} for {dof} dof{edge}")
            print(f"step {t:4d} {name:10s} N * signed deviation per entry: " + "; ".join(
                " ".join(f"{v:+.3f}" for v in W * d[:, a]) for a in range(d.shape[1])))


if __name__ == "__main__":
    main()
