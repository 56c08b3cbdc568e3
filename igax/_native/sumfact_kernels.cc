// Native CPU kernel for one step of the 3D sum-factorised band contraction, registered with XLA's FFI.
//
// The step (igax/fem/forms/_sumfact_compact.py, step_compact) contracts the last axis of the states
// G (S, P, nv nq) with the nonzero rows of the band tables of a direction: for each output state s (the sum
// of its member states j), element v and rows (a, b) of the element's functions,
//
//   out[s, v + a, b - a + p, x] += sum_{j, t} A_s[v, (a, b), (j, t)] G[member_j, x, v nq + t]
//
// with out (S', n, L, P), n = nv + p, L = 2 p + 1, and the tables of all output states concatenated,
// A_s (nv, (p + 1)^2, m_s nq). In XLA the same step is a transpose of the member states, a batched matrix
// product with an inner dimension of m nq (3 to 12 for degree 2) and p + 1 pads added into the band: several
// passes over memory per step. Here the members are transposed once into a scratch buffer ((v, t) rows of
// P contiguous values) and each band row is accumulated in blocks of P that stay in the L1 cache.
//
// Why the AVX2/FMA variant: the accumulation is a stream of multiply-adds over contiguous rows; the build
// flags are generic x86-64 (SSE2), so the kernel is compiled twice and the variant is chosen at run time by
// the CPU's features (the results differ from the SSE2 ones by rounding only).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kBlock = 256;  // values of P per pass: a band row block of 2 KiB stays in L1

struct StepArgs {
  const double* g;       // (S, P, Q)
  const double* tab;     // concatenated tables
  const int32_t* mem;    // members, concatenated
  const int32_t* cnt;    // members per output state
  double* out;           // (So, n, L, P)
  int64_t S, P, Q, So, p, nq;
};

template <int NQ>
__attribute__((always_inline)) inline void Accumulate(double* __restrict__ row, const double* __restrict__ c, const double* __restrict__ src,
                       int64_t P, int64_t w, int64_t nq) {
  if (NQ == 3) {
    const double c0 = c[0], c1 = c[1], c2 = c[2];
    const double* s0 = src;
    const double* s1 = src + P;
    const double* s2 = src + 2 * P;
    for (int64_t x = 0; x < w; ++x) row[x] += c0 * s0[x] + c1 * s1[x] + c2 * s2[x];
  } else {
    for (int64_t t = 0; t < nq; ++t) {
      const double ct = c[t];
      const double* s = src + t * P;
      for (int64_t x = 0; x < w; ++x) row[x] += ct * s[x];
    }
  }
}

template <int NQ>
__attribute__((always_inline)) inline void StepBody(const StepArgs& a) {
  const int64_t P = a.P, Q = a.Q, p = a.p, nq = a.nq;
  const int64_t nv = Q / nq, L = 2 * p + 1, n = nv + p, R = (p + 1) * (p + 1);
  std::memset(a.out, 0, sizeof(double) * a.So * n * L * P);
  std::vector<double> gt;
  int64_t moff = 0, toff = 0;
  for (int64_t s = 0; s < a.So; ++s) {
    const int64_t m = a.cnt[s];
    gt.resize(size_t(m * Q * P));
    // The member states transposed: row (j, v nq + t) holds the P values at that point.
    for (int64_t j = 0; j < m; ++j) {
      const double* src = a.g + int64_t(a.mem[moff + j]) * P * Q;
      double* dst = gt.data() + j * Q * P;
      for (int64_t x = 0; x < P; ++x)
        for (int64_t q = 0; q < Q; ++q) dst[q * P + x] = src[x * Q + q];
    }
    const double* A = a.tab + toff;
    double* os = a.out + s * n * L * P;
    const int64_t K = m * nq;
    for (int64_t x0 = 0; x0 < P; x0 += kBlock) {
      const int64_t w = std::min(kBlock, P - x0);
      for (int64_t v = 0; v < nv; ++v)
        for (int64_t ia = 0; ia <= p; ++ia)
          for (int64_t ib = 0; ib <= p; ++ib) {
            const double* c = A + (v * R + ia * (p + 1) + ib) * K;
            double* row = os + ((v + ia) * L + (ib - ia + p)) * P + x0;
            for (int64_t j = 0; j < m; ++j)
              Accumulate<NQ>(row, c + j * nq, gt.data() + (j * Q + v * nq) * P + x0, P, w, nq);
          }
    }
    moff += m;
    toff += nv * R * K;
  }
}

void StepGeneric(const StepArgs& a) {
  if (a.nq == 3)
    StepBody<3>(a);
  else
    StepBody<0>(a);
}

__attribute__((target("avx2,fma"))) void StepAvx2(const StepArgs& a) {
  if (a.nq == 3)
    StepBody<3>(a);
  else
    StepBody<0>(a);
}

ffi::Error BandStep(ffi::Buffer<ffi::F64> G, ffi::Buffer<ffi::F64> tables, ffi::Buffer<ffi::S32> members,
                    ffi::Buffer<ffi::S32> counts, ffi::ResultBuffer<ffi::F64> out, int64_t p, int64_t nq) {
  const auto gd = G.dimensions();
  const auto od = out->dimensions();
  if (gd.size() != 3 || od.size() != 4 || p < 0 || nq < 1)
    return ffi::Error::InvalidArgument("igax sumfact step: expected G (S, P, nv nq) and out (S', n, L, P)");
  StepArgs a{G.typed_data(), tables.typed_data(), members.typed_data(), counts.typed_data(),
             out->typed_data(), gd[0], gd[1], gd[2], int64_t(counts.element_count()), p, nq};
  if (a.Q % nq != 0) return ffi::Error::InvalidArgument("igax sumfact step: nq does not divide G's last axis");
  const int64_t nv = a.Q / nq, R = (p + 1) * (p + 1);
  if (od[0] != a.So || od[1] != nv + p || od[2] != 2 * p + 1 || od[3] != a.P)
    return ffi::Error::InvalidArgument("igax sumfact step: the result's shape does not match G");
  int64_t total = 0, ktot = 0;
  for (int64_t s = 0; s < a.So; ++s) {
    if (a.cnt[s] < 1) return ffi::Error::InvalidArgument("igax sumfact step: an output state has no members");
    total += a.cnt[s];
    ktot += nv * R * a.cnt[s] * nq;
  }
  if (total != int64_t(members.element_count()) || ktot != int64_t(tables.element_count()))
    return ffi::Error::InvalidArgument("igax sumfact step: members or tables do not match the counts");
  for (int64_t i = 0; i < total; ++i)
    if (a.mem[i] < 0 || a.mem[i] >= a.S)
      return ffi::Error::InvalidArgument("igax sumfact step: a member index is out of range");
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2)
    StepAvx2(a);
  else
    StepGeneric(a);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxSumfactStepF64, BandStep,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Attr<int64_t>("p")
                                  .Attr<int64_t>("nq"));
