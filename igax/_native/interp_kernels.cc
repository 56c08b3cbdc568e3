// Native CPU kernels for igax.bases.interpolate (linear, quadratic and cubic splines), registered with XLA's FFI.
//
// Two linear maps of the values y, for fixed sites x and evaluation points xq:
//   forward:   out = L(x, xq) y        (slopes or B-spline coefficients by one tridiagonal solve, then the
//                                       piecewise polynomial at xq)
//   transpose: ybar = L(x, xq)^T g     (segment sums of g t^k, coefficient transpose, one transposed solve)
// Each is one pass over the points and O(n) work on the sites, in a single XLA custom call: the pure-JAX
// path needs ~30 XLA operations for the same thing, whose fixed costs dominate small problems. Points are
// located by galloping from the previous point's interval, so sorted points cost O(n + m) and unsorted ones
// O(m log n), with no promise from the caller. The derivatives with respect to x and xq are not here: the
// Python side takes them from the pure-JAX implementation (see igax/bases/_interp_native.py).
//
// All arrays carry the same leading batch dimensions (vmap); the core shapes are x (n), xq (m), y (n, r),
// out (m, r). Cubic end conditions: 0 not-a-knot, 1 natural (zero second derivative), 2 clamped (zero slope).
// The quadratic spline is SciPy's make_interp_spline(k=2): knots at the midpoints between sites, the second and
// second-to-last left out, so its n - 2 pieces break at x[0], the midpoints (x[i] + x[i+1]) / 2 for
// i = 1..n-3, and x[n-1]; its B-spline coefficients solve the (totally positive) collocation system.
// The tridiagonal solve uses partial pivoting like LAPACK gtsv: the not-a-knot rows are not diagonally
// dominant.

#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum EndCondition : int32_t { kNotAKnot = 0, kNatural = 1, kClamped = 2 };

// Interval i in [0, nseg-1] with x[i] <= v < x[i+1], ends clipped (extrapolation by the end pieces),
// found by galloping from the previous answer k. NaN stays in interval k.
template <typename T>
inline int64_t FindInterval(const T* x, int64_t nseg, T v, int64_t k) {
  if (k > 0 && v < x[k]) {  // move left: x[hi] > v, and lo == 0 or x[lo] <= v at the end
    int64_t hi = k, step = 1, lo = k - 1;
    while (lo > 0 && x[lo] > v) {
      hi = lo;
      step *= 2;
      lo = k - step > 0 ? k - step : 0;
    }
    while (hi - lo > 1) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (x[mid] <= v) lo = mid; else hi = mid;
    }
    return lo;
  }
  if (k + 1 >= nseg || !(x[k + 1] <= v)) return k;
  int64_t lo = k + 1, step = 1, hi = lo + 1;  // x[lo] <= v; hi == nseg stands for "past the end"
  while (hi < nseg && x[hi] <= v) {
    lo = hi;
    step *= 2;
    hi = lo + step;
  }
  if (hi > nseg) hi = nseg;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (x[mid] <= v) lo = mid; else hi = mid;
  }
  return lo;
}

// Solve A b_new = b for tridiagonal A (sub dl[0..n-2], diag d, super du[0..n-2]) with partial pivoting,
// r right-hand sides stored row-major in b (n, r). dl, d, du are overwritten; du2 and dinv are scratch (n).
// The elimination is LAPACK gtsv's; the pivots' reciprocals are kept so that the back substitution
// multiplies: a division in each step of the (serial) recurrence set its speed.
template <typename T>
void TridiagonalSolve(int64_t n, int64_t r, T* dl, T* d, T* du, T* du2, T* dinv, T* b) {
  for (int64_t i = 0; i + 1 < n; ++i) {
    T* bi = b + i * r;
    T* bn = b + (i + 1) * r;
    if (std::abs(d[i]) >= std::abs(dl[i])) {
      const T inv = T(1) / d[i];
      const T fact = dl[i] * inv;
      dinv[i] = inv;
      d[i + 1] -= fact * du[i];
      for (int64_t c = 0; c < r; ++c) bn[c] -= fact * bi[c];
      du2[i] = T(0);
    } else {  // swap rows i and i+1
      const T inv = T(1) / dl[i];
      const T fact = d[i] * inv;
      dinv[i] = inv;
      d[i] = dl[i];
      const T temp = d[i + 1];
      d[i + 1] = du[i] - fact * temp;
      if (i + 2 < n) {
        du2[i] = du[i + 1];
        du[i + 1] = -fact * du2[i];
      } else {
        du2[i] = T(0);
      }
      du[i] = temp;
      for (int64_t c = 0; c < r; ++c) {
        const T bi_old = bi[c];
        bi[c] = bn[c];
        bn[c] = bi_old - fact * bn[c];
      }
    }
  }
  T* last = b + (n - 1) * r;
  for (int64_t c = 0; c < r; ++c) last[c] /= d[n - 1];
  if (n >= 2) {
    T* bi = b + (n - 2) * r;
    for (int64_t c = 0; c < r; ++c) bi[c] = (bi[c] - du[n - 2] * last[c]) * dinv[n - 2];
  }
  for (int64_t i = n - 3; i >= 0; --i) {
    T* bi = b + i * r;
    const T* b1 = bi + r;
    const T* b2 = bi + 2 * r;
    for (int64_t c = 0; c < r; ++c) bi[c] = (bi[c] - du[i] * b1[c] - du2[i] * b2[c]) * dinv[i];
  }
}

// The cubic slope system A s = R(delta) (same rows as igax.bases.interp._cubic_slopes), n >= 4.
// dl[i] = A[i+1, i], d[i] = A[i, i], du[i] = A[i, i+1].
template <typename T>
void CubicMatrix(const T* h, int64_t n, int32_t left, int32_t right, T* dl, T* d, T* du) {
  for (int64_t i = 1; i + 1 < n; ++i) {
    dl[i - 1] = h[i];
    d[i] = T(2) * (h[i - 1] + h[i]);
    du[i] = h[i - 1];
  }
  if (left == kNatural) {
    d[0] = T(2); du[0] = T(1);
  } else if (left == kClamped) {
    d[0] = T(1); du[0] = T(0);
  } else {
    d[0] = h[1]; du[0] = h[0] + h[1];
  }
  if (right == kNatural) {
    d[n - 1] = T(2); dl[n - 2] = T(1);
  } else if (right == kClamped) {
    d[n - 1] = T(1); dl[n - 2] = T(0);
  } else {
    d[n - 1] = h[n - 3]; dl[n - 2] = h[n - 2] + h[n - 3];
  }
}

// rhs (n, r) = R(delta), delta (n-1, r).
template <typename T>
void CubicRhs(const T* h, const T* delta, int64_t n, int64_t r, int32_t left, int32_t right, T* rhs) {
  for (int64_t i = 1; i + 1 < n; ++i)
    for (int64_t c = 0; c < r; ++c)
      rhs[i * r + c] = T(3) * (h[i] * delta[(i - 1) * r + c] + h[i - 1] * delta[i * r + c]);
  const T ddl = h[0] + h[1], ddr = h[n - 2] + h[n - 3];
  for (int64_t c = 0; c < r; ++c) {
    if (left == kNatural) rhs[c] = T(3) * delta[c];
    else if (left == kClamped) rhs[c] = T(0);
    else rhs[c] = ((h[0] + T(2) * ddl) * h[1] * delta[c] + h[0] * h[0] * delta[r + c]) / ddl;
    T* rn = rhs + (n - 1) * r;
    if (right == kNatural) rn[c] = T(3) * delta[(n - 2) * r + c];
    else if (right == kClamped) rn[c] = T(0);
    else rn[c] = (h[n - 2] * h[n - 2] * delta[(n - 3) * r + c] +
                  (T(2) * ddr + h[n - 2]) * h[n - 3] * delta[(n - 2) * r + c]) / ddr;
  }
}

// dbar (n-1, r) += R^T rb, rb (n, r).
template <typename T>
void CubicRhsTranspose(const T* h, const T* rb, int64_t n, int64_t r, int32_t left, int32_t right, T* dbar) {
  for (int64_t i = 1; i + 1 < n; ++i)
    for (int64_t c = 0; c < r; ++c) {
      dbar[(i - 1) * r + c] += T(3) * h[i] * rb[i * r + c];
      dbar[i * r + c] += T(3) * h[i - 1] * rb[i * r + c];
    }
  const T ddl = h[0] + h[1], ddr = h[n - 2] + h[n - 3];
  for (int64_t c = 0; c < r; ++c) {
    const T r0 = rb[c], rn = rb[(n - 1) * r + c];
    if (left == kNatural) {
      dbar[c] += T(3) * r0;
    } else if (left == kNotAKnot) {
      dbar[c] += (h[0] + T(2) * ddl) * h[1] / ddl * r0;
      dbar[r + c] += h[0] * h[0] / ddl * r0;
    }
    if (right == kNatural) {
      dbar[(n - 2) * r + c] += T(3) * rn;
    } else if (right == kNotAKnot) {
      dbar[(n - 3) * r + c] += h[n - 2] * h[n - 2] / ddr * rn;
      dbar[(n - 2) * r + c] += (T(2) * ddr + h[n - 2]) * h[n - 3] / ddr * rn;
    }
  }
}

// The quadratic spline's full knot vector t (n + 3): x[0] three times, the midpoints (x[i] + x[i+1]) / 2 for
// i = 1..n-3, x[n-1] three times. Its breakpoints are t[2..n] (n - 1 of them, n - 2 pieces); piece j spans
// [t[j+2], t[j+3]] and carries the B-splines j, j+1, j+2, whose local knots are t[j+1..j+4].
template <typename T>
void QuadraticKnots(const T* x, int64_t n, T* t) {
  t[0] = t[1] = t[2] = x[0];
  for (int64_t i = 1; i + 2 < n; ++i) t[i + 2] = T(0.5) * (x[i] + x[i + 1]);
  t[n] = t[n + 1] = t[n + 2] = x[n - 1];
}

// The three quadratic B-splines that do not vanish on the piece with local knots k[0..3], at u in
// [k[1], k[2]]: Cox-de Boor written out, the same operations as interp._quadratic_values (same rounding).
template <typename T>
inline void QuadraticValues(const T* k, T u, T* b) {
  const T left1 = u - k[1], right1 = k[2] - u, left2 = u - k[0], right2 = k[3] - u;
  const T tmp = T(1) / (right1 + left1);
  const T tmp0 = right1 * tmp / (right1 + left2), tmp1 = left1 * tmp / (right2 + left1);
  b[0] = right1 * tmp0;
  b[1] = left2 * tmp0 + right2 * tmp1;
  b[2] = left1 * tmp1;
}

// The collocation matrix (dl[i] = A[i+1, i], d[i] = A[i, i], du[i] = A[i, i+1]): rows 0 and n-1 pin the end
// coefficients to the end values; row i = 1..n-2 holds the B-splines i-1, i, i+1 at x[i], which lies on piece
// i - 1.
template <typename T>
void QuadraticMatrix(const T* x, const T* t, int64_t n, T* dl, T* d, T* du) {
  d[0] = T(1);
  du[0] = T(0);
  for (int64_t i = 1; i + 1 < n; ++i) {
    T b[3];
    QuadraticValues(t + i, x[i], b);
    dl[i - 1] = b[0];
    d[i] = b[1];
    du[i] = b[2];
  }
  dl[n - 2] = T(0);
  d[n - 1] = T(1);
}

// Power form of piece j from its coefficients c[j..j+2] in t - t[j+2] (hs = k2 - k1, D0 = k2 - k0, D2 = k3 - k1):
//   B0 = (hs - t)^2 / (hs D0), B2 = t^2 / (hs D2), B1 = 1 - B0 - B2, so with d0 = c0 - c1, d2 = c2 - c1
//   p(t) = c1 + d0 B0 + d2 B2 = (c1 + d0 hs / D0) - (2 d0 / D0) t + (d0 / D0 + d2 / D2) / hs t^2.
// Every factor is at most 1 on the piece (t <= hs <= D0, D2): no cancellation beyond that of the values.
template <typename T>
struct QuadraticPiece {
  T hs, ia, ib, ih;  // k2 - k1, 1 / D0, 1 / D2, 1 / hs
  explicit QuadraticPiece(const T* k) {
    hs = k[2] - k[1];
    ia = T(1) / (k[2] - k[0]);
    ib = T(1) / (k[3] - k[1]);
    ih = T(1) / hs;
  }
};

template <typename T>
struct Scratch {
  std::vector<T> h, ih, delta, dl, d, du, du2, dinv, work, table, knots;  // ih = 1 / h
  void Resize(int64_t n, int64_t r, int64_t ncoef) {
    knots.resize(n + 3);
    h.resize(n);
    ih.resize(n);
    delta.resize(n * r);
    dl.resize(n);
    d.resize(n);
    du.resize(n);
    du2.resize(n);
    dinv.resize(n);
    work.resize(n * r);
    table.resize(n * r * ncoef);
  }
  int64_t Bytes() const {
    return static_cast<int64_t>(sizeof(T)) *
           static_cast<int64_t>(h.capacity() + ih.capacity() + delta.capacity() + dl.capacity() + d.capacity() +
                                du.capacity() + du2.capacity() + dinv.capacity() + work.capacity() +
                                table.capacity() + knots.capacity());
  }
};

// out (m, r): the piecewise polynomial with coefficient table tab (nseg, r, K), lowest power first, at the
// points xq, each in its interval. K is a template argument so that the Horner loop unrolls.
template <typename T, int K>
void EvaluatePieces(const T* x, const T* xq, const T* tab, int64_t nseg, int64_t m, int64_t r, T* out) {
  int64_t k = 0;
  for (int64_t j = 0; j < m; ++j) {
    k = FindInterval(x, nseg, xq[j], k);
    const T t = xq[j] - x[k];
    const T* e = tab + k * r * K;
    for (int64_t c = 0; c < r; ++c, e += K) {
      T acc = e[K - 1];
      for (int p = K - 2; p >= 0; --p) acc = e[p] + t * acc;
      out[j * r + c] = acc;
    }
  }
}

// The transpose of EvaluatePieces: sums (nseg, r, K) of g t^p over the points in each interval (zeroed first).
template <typename T, int K>
void SumPieces(const T* x, const T* xq, const T* g, int64_t nseg, int64_t m, int64_t r, T* sums) {
  for (int64_t i = 0; i < nseg * r * K; ++i) sums[i] = T(0);
  int64_t k = 0;
  for (int64_t j = 0; j < m; ++j) {
    k = FindInterval(x, nseg, xq[j], k);
    const T t = xq[j] - x[k];
    T* e = sums + k * r * K;
    for (int64_t c = 0; c < r; ++c, e += K) {
      T w = g[j * r + c];
      for (int p = 0; p < K; ++p, w *= t) e[p] += w;
    }
  }
}

// Sorted points (the common case: a grid, or a sorted sample) take these: the points of each interval form
// one contiguous run, evaluated with the interval's coefficients held in registers (the loop vectorises),
// instead of locating every point on its own.
// End of the run of points of interval i that starts at j: the first point not below x[i+1] (all points for
// the last interval).
template <typename T>
inline int64_t RunEnd(const T* x, const T* xq, int64_t nseg, int64_t m, int64_t i, int64_t j) {
  if (i + 1 >= nseg) return m;
  const T b = x[i + 1];
  while (j < m && xq[j] < b) ++j;
  return j;
}

template <typename T, int K>
void EvaluateSorted(const T* x, const T* xq, const T* tab, int64_t nseg, int64_t m, int64_t r, T* out) {
  int64_t j = 0;
  for (int64_t i = 0; i < nseg; ++i) {
    const int64_t end = RunEnd(x, xq, nseg, m, i, j);
    const T xi = x[i];
    for (int64_t c = 0; c < r; ++c) {
      T e[K];
      for (int p = 0; p < K; ++p) e[p] = tab[(i * r + c) * K + p];
      for (int64_t jj = j; jj < end; ++jj) {
        const T t = xq[jj] - xi;
        T acc = e[K - 1];
        for (int p = K - 2; p >= 0; --p) acc = e[p] + t * acc;
        out[jj * r + c] = acc;
      }
    }
    j = end;
  }
}

template <typename T, int K>
void SumSorted(const T* x, const T* xq, const T* g, int64_t nseg, int64_t m, int64_t r, T* sums) {
  int64_t j = 0;
  for (int64_t i = 0; i < nseg; ++i) {
    const int64_t end = RunEnd(x, xq, nseg, m, i, j);
    const T xi = x[i];
    for (int64_t c = 0; c < r; ++c) {
      T acc[K] = {};
      for (int64_t jj = j; jj < end; ++jj) {
        const T t = xq[jj] - xi;
        T w = g[jj * r + c];
        for (int p = 0; p < K; ++p, w *= t) acc[p] += w;
      }
      for (int p = 0; p < K; ++p) sums[(i * r + c) * K + p] = acc[p];
    }
    j = end;
  }
}

// Non-decreasing, with no NaN (a NaN point makes the runs meaningless: those inputs take the per-point path).
template <typename T>
inline bool PointsSorted(const T* v, int64_t m) {
  bool ok = true;
  for (int64_t j = 0; j + 1 < m; ++j) ok &= (v[j] <= v[j + 1]);
  return ok && (m == 0 || v[0] == v[0]);
}

// Scratch buffers are reused between calls: on small VMs a fresh allocation of a few MB costs more in
// first-touch page faults than the kernel itself. A pool (one buffer per concurrently running call) keeps
// them; buffers above 256 MB are freed after their call instead, so that nothing huge stays allocated.
template <typename T>
class ScratchLease {
 public:
  ScratchLease(int64_t n, int64_t r, int64_t ncoef) {
    {
      std::lock_guard<std::mutex> lock(Mutex());
      if (!Pool().empty()) {
        s_ = std::move(Pool().back());
        Pool().pop_back();
      }
    }
    if (!s_) s_ = std::make_unique<Scratch<T>>();
    s_->Resize(n, r, ncoef);
  }
  ~ScratchLease() {
    if (s_->Bytes() > (int64_t(256) << 20)) return;  // freed
    std::lock_guard<std::mutex> lock(Mutex());
    Pool().push_back(std::move(s_));
  }
  Scratch<T>& operator*() { return *s_; }

 private:
  static std::mutex& Mutex() {
    static std::mutex m;
    return m;
  }
  static std::vector<std::unique_ptr<Scratch<T>>>& Pool() {
    static std::vector<std::unique_ptr<Scratch<T>>> pool;
    return pool;
  }
  std::unique_ptr<Scratch<T>> s_;
};

// Quadratic forward: coefficients c = A^{-1} y (one solve), their power form on each piece, evaluation.
template <typename T>
void QuadraticForward(const T* x, const T* y, const T* xq, int64_t n, int64_t m, int64_t r, bool sorted,
                      Scratch<T>& s, T* out) {
  const int64_t nseg = n - 2;
  T* t = s.knots.data();
  QuadraticKnots(x, n, t);
  QuadraticMatrix(x, t, n, s.dl.data(), s.d.data(), s.du.data());
  T* c = s.work.data();  // (n, r)
  for (int64_t i = 0; i < n * r; ++i) c[i] = y[i];
  TridiagonalSolve(n, r, s.dl.data(), s.d.data(), s.du.data(), s.du2.data(), s.dinv.data(), c);
  T* tab = s.table.data();  // (nseg, r, 3), lowest power first
  for (int64_t j = 0; j < nseg; ++j) {
    const QuadraticPiece<T> p(t + j + 1);
    for (int64_t col = 0; col < r; ++col) {
      const T c1 = c[(j + 1) * r + col];
      const T d0 = (c[j * r + col] - c1) * p.ia, d2 = (c[(j + 2) * r + col] - c1) * p.ib;
      T* e = tab + (j * r + col) * 3;
      e[0] = c1 + d0 * p.hs;
      e[1] = T(-2) * d0;
      e[2] = (d0 + d2) * p.ih;
    }
  }
  const T* breaks = t + 2;
  if (sorted) EvaluateSorted<T, 3>(breaks, xq, tab, nseg, m, r, out);
  else EvaluatePieces<T, 3>(breaks, xq, tab, nseg, m, r, out);
}

// Quadratic transpose: segment sums of g t^p, the power form's transpose onto the coefficients, then
// ybar = A^{-T} cbar (one transposed solve).
template <typename T>
void QuadraticTranspose(const T* x, const T* xq, const T* g, int64_t n, int64_t m, int64_t r, bool sorted,
                        Scratch<T>& s, T* ybar) {
  const int64_t nseg = n - 2;
  T* t = s.knots.data();
  QuadraticKnots(x, n, t);
  const T* breaks = t + 2;
  T* sums = s.table.data();  // (nseg, r, 3)
  if (sorted) SumSorted<T, 3>(breaks, xq, g, nseg, m, r, sums);
  else SumPieces<T, 3>(breaks, xq, g, nseg, m, r, sums);
  for (int64_t i = 0; i < n * r; ++i) ybar[i] = T(0);  // cbar, solved in place below
  for (int64_t j = 0; j < nseg; ++j) {
    const QuadraticPiece<T> p(t + j + 1);
    for (int64_t col = 0; col < r; ++col) {
      const T* e = sums + (j * r + col) * 3;
      const T a2b = e[2] * p.ih;
      const T d0b = (e[0] * p.hs - T(2) * e[1] + a2b) * p.ia, d2b = a2b * p.ib;
      ybar[j * r + col] += d0b;
      ybar[(j + 1) * r + col] += e[0] - d0b - d2b;
      ybar[(j + 2) * r + col] += d2b;
    }
  }
  // The transposed matrix swaps the sub- and super-diagonals.
  QuadraticMatrix(x, t, n, s.dl.data(), s.d.data(), s.du.data());
  TridiagonalSolve(n, r, s.du.data(), s.d.data(), s.dl.data(), s.du2.data(), s.dinv.data(), ybar);
}

template <typename T>
void Forward(const T* x, const T* y, const T* xq, int64_t n, int64_t m, int64_t r, int32_t degree,
             int32_t left, int32_t right, bool sorted, Scratch<T>& s, T* out) {
  if (degree == 2) return QuadraticForward(x, y, xq, n, m, r, sorted, s, out);
  const int64_t nseg = n - 1;
  // One reciprocal per interval, reused: divisions dominate the O(n) part.
  T* ih = s.ih.data();
  for (int64_t i = 0; i < nseg; ++i) {
    s.h[i] = x[i + 1] - x[i];
    ih[i] = T(1) / s.h[i];
    for (int64_t c = 0; c < r; ++c) s.delta[i * r + c] = (y[(i + 1) * r + c] - y[i * r + c]) * ih[i];
  }
  T* tab = s.table.data();  // (nseg, r, K), lowest power first
  if (degree == 1) {
    for (int64_t i = 0; i < nseg; ++i)
      for (int64_t c = 0; c < r; ++c) {
        tab[(i * r + c) * 2] = y[i * r + c];
        tab[(i * r + c) * 2 + 1] = s.delta[i * r + c];
      }
  } else {
    T* slope = s.work.data();
    CubicMatrix(s.h.data(), n, left, right, s.dl.data(), s.d.data(), s.du.data());
    CubicRhs(s.h.data(), s.delta.data(), n, r, left, right, slope);
    TridiagonalSolve(n, r, s.dl.data(), s.d.data(), s.du.data(), s.du2.data(), s.dinv.data(), slope);
    for (int64_t i = 0; i < nseg; ++i) {
      for (int64_t c = 0; c < r; ++c) {
        const T s0 = slope[i * r + c], s1 = slope[(i + 1) * r + c], dl = s.delta[i * r + c];
        T* e = tab + (i * r + c) * 4;
        const T inv = ih[i];
        e[0] = y[i * r + c];
        e[1] = s0;
        e[2] = (T(3) * dl - T(2) * s0 - s1) * inv;
        e[3] = (s0 + s1 - T(2) * dl) * (inv * inv);
      }
    }
  }
  if (degree == 1) {
    if (sorted) EvaluateSorted<T, 2>(x, xq, tab, nseg, m, r, out);
    else EvaluatePieces<T, 2>(x, xq, tab, nseg, m, r, out);
  } else {
    if (sorted) EvaluateSorted<T, 4>(x, xq, tab, nseg, m, r, out);
    else EvaluatePieces<T, 4>(x, xq, tab, nseg, m, r, out);
  }
}

template <typename T>
void Transpose(const T* x, const T* xq, const T* g, int64_t n, int64_t m, int64_t r, int32_t degree,
               int32_t left, int32_t right, bool sorted, Scratch<T>& s, T* ybar) {
  if (degree == 2) return QuadraticTranspose(x, xq, g, n, m, r, sorted, s, ybar);
  const int64_t nseg = n - 1;
  T* sums = s.table.data();  // (nseg, r, K): sum of g t^p over the points in each interval
  if (degree == 1) {
    if (sorted) SumSorted<T, 2>(x, xq, g, nseg, m, r, sums);
    else SumPieces<T, 2>(x, xq, g, nseg, m, r, sums);
  } else {
    if (sorted) SumSorted<T, 4>(x, xq, g, nseg, m, r, sums);
    else SumPieces<T, 4>(x, xq, g, nseg, m, r, sums);
  }
  T* ih = s.ih.data();
  for (int64_t i = 0; i < nseg; ++i) {
    s.h[i] = x[i + 1] - x[i];
    ih[i] = T(1) / s.h[i];
  }
  for (int64_t i = 0; i < n * r; ++i) ybar[i] = T(0);
  T* dbar = s.delta.data();  // (nseg, r)
  if (degree == 1) {
    for (int64_t i = 0; i < nseg; ++i)
      for (int64_t c = 0; c < r; ++c) {
        ybar[i * r + c] += sums[(i * r + c) * 2];
        dbar[i * r + c] = sums[(i * r + c) * 2 + 1];
      }
  } else {
    T* sbar = s.work.data();  // (n, r)
    for (int64_t i = 0; i < n * r; ++i) sbar[i] = T(0);
    for (int64_t i = 0; i < nseg; ++i) {
      for (int64_t c = 0; c < r; ++c) {
        const T* e = sums + (i * r + c) * 4;
        const T c2b = e[2] * ih[i], c3b = e[3] * (ih[i] * ih[i]);
        ybar[i * r + c] += e[0];
        sbar[i * r + c] += e[1] - T(2) * c2b + c3b;
        sbar[(i + 1) * r + c] += c3b - c2b;
        dbar[i * r + c] = T(3) * c2b - T(2) * c3b;
      }
    }
    // rhs_bar = A^{-T} sbar: the transposed matrix swaps the sub- and super-diagonals.
    CubicMatrix(s.h.data(), n, left, right, s.dl.data(), s.d.data(), s.du.data());
    TridiagonalSolve(n, r, s.du.data(), s.d.data(), s.dl.data(), s.du2.data(), s.dinv.data(), sbar);
    CubicRhsTranspose(s.h.data(), sbar, n, r, left, right, dbar);
  }
  for (int64_t i = 0; i < nseg; ++i)
    for (int64_t c = 0; c < r; ++c) {
      const T v = dbar[i * r + c] * ih[i];
      ybar[i * r + c] -= v;
      ybar[(i + 1) * r + c] += v;
    }
}

inline ffi::Error CheckDegree(int32_t degree, int32_t left, int32_t right) {
  if (degree < 1 || degree > 3) return ffi::Error::InvalidArgument("igax interp: degree must be 1, 2 or 3");
  if (left < 0 || left > 2 || right < 0 || right > 2)
    return ffi::Error::InvalidArgument("igax interp: end condition code must be 0, 1 or 2");
  return ffi::Error::Success();
}

// Value checks, requested by the bit flags of the attribute "check" (igax/bases/_interp_native.py): sites
// finite and strictly increasing (no duplicates), points finite, values finite. A failure is reported like the
// shape errors, through the FFI's error status, so a NaN never comes back silently from a jitted program. It
// costs one pass over operands that the kernel reads anyway (~0.1 us at n = 64, m = 640), where a run-time
// branch in the XLA program (igax.solvers._errors.error_if) measured ~3.6 us on this 8 us call. The messages are those
// of the pure-JAX path's checks (igax/bases/interp.py), word for word.
enum CheckFlags : int32_t { kCheckSites = 1, kCheckPoints = 2, kCheckValues = 4 };

#define IGAX_HINT " (checked at run time under jit; interpolate(..., check=False) skips the value checks)"

// v * 0 is (+-)0 for a finite v and NaN for NaN or infinity, and NaN survives any sum: four independent
// sums (no early exit, order irrelevant) keep the loop at the speed of the loads. Measured ~3x faster than
// a loop over std::isfinite, which the compiler does not vectorise without -ffast-math.
template <typename T>
inline bool AllFinite(const T* v, int64_t len) {
  T a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  int64_t i = 0;
  for (; i + 4 <= len; i += 4) {
    a0 += v[i] * T(0);
    a1 += v[i + 1] * T(0);
    a2 += v[i + 2] * T(0);
    a3 += v[i + 3] * T(0);
  }
  for (; i < len; ++i) a0 += v[i] * T(0);
  return (a0 + a1) + (a2 + a3) == T(0);
}

template <typename T>
inline bool Finite(T v) {
  return (v - v) == T(0);
}

// `sorted`: PointsSorted(xq, m), which the kernel needs anyway. Increasing sequences (sorted points, sites
// that pass the order check) hold no NaN, as every comparison with NaN fails, so they are finite exactly when
// their ends are: the full scan for finite values runs only for the values and for unsorted points.
template <typename T>
ffi::Error CheckValues(const T* x, const T* xq, const T* v, int64_t n, int64_t m, int64_t len_v, bool sorted,
                       int32_t flags) {
  if (flags & kCheckSites) {
    int flat = 0;
    for (int64_t i = 0; i + 1 < n; ++i) flat |= !(x[i + 1] > x[i]);
    if (flat ? !AllFinite(x, n) : !(Finite(x[0]) && Finite(x[n - 1])))
      return ffi::Error::InvalidArgument("interpolate: x contains NaN or infinity; sites must be finite" IGAX_HINT);
    if (flat)
      return ffi::Error::InvalidArgument(
          "interpolate: x must be strictly increasing, without duplicate sites; sort the sites (and y with them: "
          "order = jnp.argsort(x)) and merge duplicates" IGAX_HINT);
  }
  if ((flags & kCheckValues) && !AllFinite(v, len_v))
    return ffi::Error::InvalidArgument("interpolate: y contains NaN or infinity; values must be finite" IGAX_HINT);
  if ((flags & kCheckPoints) && m > 0 && (sorted ? !(Finite(xq[0]) && Finite(xq[m - 1])) : !AllFinite(xq, m)))
    return ffi::Error::InvalidArgument(
        "interpolate: x_new contains NaN or infinity; evaluation points must be finite" IGAX_HINT);
  return ffi::Error::Success();
}

#undef IGAX_HINT

// Batch size and core sizes from the operands x (..., n), xq (..., m) and v (..., k, r), where k is n for
// the values (forward) and m for the cotangent (transpose); an error names what does not fit.
struct Sizes {
  int64_t batch = 1, n = 0, m = 0, r = 0;
};

template <ffi::DataType DT>
ffi::Error ReadSizes(const ffi::Buffer<DT>& x, const ffi::Buffer<DT>& xq, const ffi::Buffer<DT>& v,
                     bool v_on_points, Sizes& z) {
  const auto xd = x.dimensions(), qd = xq.dimensions(), vd = v.dimensions();
  if (xd.size() < 1 || qd.size() != xd.size() || vd.size() != xd.size() + 1)
    return ffi::Error::InvalidArgument("igax interp: expected x (..., n), xq (..., m), values (..., k, r)");
  z.n = xd.back();
  z.m = qd.back();
  z.r = vd.back();
  if (vd[vd.size() - 2] != (v_on_points ? z.m : z.n) || z.n < 4)
    return ffi::Error::InvalidArgument("igax interp: n < 4 or the values' length does not match");
  z.batch = 1;
  for (size_t a = 0; a + 1 < xd.size(); ++a) {
    if (qd[a] != xd[a] || vd[a] != xd[a]) return ffi::Error::InvalidArgument("igax interp: batch dims differ");
    z.batch *= xd[a];
  }
  return ffi::Error::Success();
}

// Checks the operands, then runs one map over the batch: the forward map (values on the sites, result on the
// points) or the transpose (cotangent on the points, result on the sites).
template <ffi::DataType DT, bool kTranspose>
ffi::Error RunBatch(ffi::Buffer<DT> x, ffi::Buffer<DT> xq, ffi::Buffer<DT> v, ffi::ResultBuffer<DT> res,
                    int32_t degree, int32_t left, int32_t right, int32_t check) {
  using T = ffi::NativeType<DT>;
  Sizes z;
  if (auto err = CheckDegree(degree, left, right); err.failure()) return err;
  if (auto err = ReadSizes(x, xq, v, kTranspose, z); err.failure()) return err;
  ScratchLease<T> lease(z.n, z.r, degree + 1);
  const int64_t in_len = (kTranspose ? z.m : z.n) * z.r, out_len = (kTranspose ? z.n : z.m) * z.r;
  for (int64_t b = 0; b < z.batch; ++b) {
    const T* xb = x.typed_data() + b * z.n;
    const T* qb = xq.typed_data() + b * z.m;
    const T* vb = v.typed_data() + b * in_len;
    T* rb = res->typed_data() + b * out_len;
    const bool sorted = PointsSorted(qb, z.m);
    // The cotangent of the transpose is not the user's input: only the sites and points are checked there.
    const int32_t flags = kTranspose ? (check & ~kCheckValues) : check;
    if (flags) {
      if (auto err = CheckValues(xb, qb, vb, z.n, z.m, in_len, sorted, flags); err.failure()) return err;
    }
    if (kTranspose) Transpose(xb, qb, vb, z.n, z.m, z.r, degree, left, right, sorted, *lease, rb);
    else Forward(xb, vb, qb, z.n, z.m, z.r, degree, left, right, sorted, *lease, rb);
  }
  return ffi::Error::Success();
}

}  // namespace

#define IGAX_BIND(DT)                                   \
  ffi::Ffi::Bind()                                      \
      .Arg<ffi::Buffer<DT>>()                           \
      .Arg<ffi::Buffer<DT>>()                           \
      .Arg<ffi::Buffer<DT>>()                           \
      .Ret<ffi::Buffer<DT>>()                           \
      .Attr<int32_t>("degree")                          \
      .Attr<int32_t>("left")                            \
      .Attr<int32_t>("right")                           \
      .Attr<int32_t>("check")

XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxInterpForwardF64, (RunBatch<ffi::F64, false>), IGAX_BIND(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxInterpForwardF32, (RunBatch<ffi::F32, false>), IGAX_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxInterpTransposeF64, (RunBatch<ffi::F64, true>), IGAX_BIND(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxInterpTransposeF32, (RunBatch<ffi::F32, true>), IGAX_BIND(ffi::F32));
