// Native CPU kernels for igax.solvers.SparseMatrix products (CSR), registered with XLA's FFI.
//
// Two products with a CSR matrix A (row pointers indptr, column indices indices, values v):
//   forward:   y[i, :] = sum_{p in row i} v[p] x[indices[p], :]              (A x)
//   transpose: y[j, :] = sum_{p : indices[p] = j} v[p] x[row(p), :]         (A^T x, without forming A^T)
// and, for the derivative with respect to the values, the sampled product of two dense arrays:
//   sample:    vbar[p] = sum_c ct[row(p), c] x[indices[p], c]     (ct[indices[p]] x[row(p)] for the transpose)
// All read the CSR arrays once, in storage order, like SciPy's csr_matvec / csc_matvec, and sum each output
// entry in the same order as SciPy (so one right-hand side gives SciPy's numbers to the last bit). XLA's own
// gathers and segment sums need 3-14x the time for the same product (see igax/solvers/_spmv.py).
//
// The forward and sampled products split their rows over XLA's intra-op thread pool when the matrix is large
// (ranges of equal numbers of stored entries; each output entry is still summed by one thread in the same
// order, so the result does not depend on the number of threads). The transposed product scatters and stays
// on one thread.
//
// Shapes: indptr (nrows + 1) int64, indices (nnz) int32, values (..., nnz), x (..., m, k) and the result
// (..., nout, k), where m = ncols and nout = nrows for the forward product (swapped for the transpose), and the
// leading batch dimensions (vmap over matrices) are the same on values, x and the result. The sampled product
// takes ct (..., nout, k) and x (..., m, k) and returns (..., nnz).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Columns c0 .. c0 + K - 1 of rows r0 .. r1 - 1 of y = A x, for x and y of k columns: the K sums of a row
// are kept in registers and stored once. Column counts other than 1, 2, 4, 8 and 16 (vmap over right-hand
// sides gives k = the batch size) are done in blocks of 8, 4, 2 and 1 columns, one pass over the rows each.
template <typename T, int K>
void ForwardBlock(int64_t r0, int64_t r1, int64_t k, int64_t c0, const int64_t* __restrict__ ptr,
                  const int32_t* __restrict__ ind, const T* __restrict__ v, const T* __restrict__ x,
                  T* __restrict__ y) {
  for (int64_t i = r0; i < r1; ++i) {
    T acc[K];
    for (int c = 0; c < K; ++c) acc[c] = 0;
    const int64_t end = ptr[i + 1];
    for (int64_t p = ptr[i]; p < end; ++p) {
      const T a = v[p];
      const T* xr = x + int64_t(ind[p]) * k + c0;
      for (int c = 0; c < K; ++c) acc[c] += a * xr[c];
    }
    T* yi = y + i * k + c0;
    for (int c = 0; c < K; ++c) yi[c] = acc[c];
  }
}

template <typename T>
void Forward(int64_t r0, int64_t r1, int64_t k, const int64_t* ptr, const int32_t* ind, const T* v,
             const T* x, T* y) {
  int64_t c0 = 0;
  if (k % 16 == 0)
    for (; c0 < k; c0 += 16) ForwardBlock<T, 16>(r0, r1, k, c0, ptr, ind, v, x, y);
  for (; c0 + 8 <= k; c0 += 8) ForwardBlock<T, 8>(r0, r1, k, c0, ptr, ind, v, x, y);
  if (c0 + 4 <= k) ForwardBlock<T, 4>(r0, r1, k, c0, ptr, ind, v, x, y), c0 += 4;
  if (c0 + 2 <= k) ForwardBlock<T, 2>(r0, r1, k, c0, ptr, ind, v, x, y), c0 += 2;
  if (c0 < k) ForwardBlock<T, 1>(r0, r1, k, c0, ptr, ind, v, x, y);
}

template <typename T>
void Transpose(int64_t nrows, int64_t nout, int64_t k, const int64_t* __restrict__ ptr,
               const int32_t* __restrict__ ind, const T* __restrict__ v, const T* __restrict__ x,
               T* __restrict__ y) {
  std::memset(y, 0, sizeof(T) * nout * k);
  if (k == 1) {
    for (int64_t i = 0; i < nrows; ++i) {
      const T xi = x[i];
      const int64_t end = ptr[i + 1];
      for (int64_t p = ptr[i]; p < end; ++p) y[ind[p]] += v[p] * xi;
    }
    return;
  }
  for (int64_t i = 0; i < nrows; ++i) {
    const T* xi = x + i * k;
    const int64_t end = ptr[i + 1];
    for (int64_t p = ptr[i]; p < end; ++p) {
      const T a = v[p];
      T* yr = y + int64_t(ind[p]) * k;
      for (int64_t c = 0; c < k; ++c) yr[c] += a * xi[c];
    }
  }
}

template <typename T, bool kTranspose>
void Sample(int64_t r0, int64_t r1, int64_t k, const int64_t* __restrict__ ptr, const int32_t* __restrict__ ind,
            const T* __restrict__ ct, const T* __restrict__ x, T* __restrict__ out) {
  const T* other = kTranspose ? ct : x;  // gathered at the column index
  for (int64_t i = r0; i < r1; ++i) {
    const int64_t end = ptr[i + 1];
    const T* own = (kTranspose ? x : ct) + i * k;  // the row's own vector
    if (k == 1) {
      for (int64_t p = ptr[i]; p < end; ++p) out[p] = kTranspose ? other[ind[p]] * own[0] : own[0] * other[ind[p]];
      continue;
    }
    for (int64_t p = ptr[i]; p < end; ++p) {
      const T* o = other + int64_t(ind[p]) * k;
      T s = 0;
      for (int64_t c = 0; c < k; ++c) s += kTranspose ? o[c] * own[c] : own[c] * o[c];
      out[p] = s;
    }
  }
}

// Below this many multiply-adds a product runs on the calling thread (a task costs a few microseconds).
constexpr int64_t kParallelWork = int64_t(1) << 18;

// body(r0, r1) over all rows: on the calling thread, or in ranges of about equal numbers of stored entries
// on the calling thread and XLA's intra-op pool. Ranges are claimed through an atomic counter and the caller
// works until none is left, then waits only for ranges that other threads have claimed (so are running): a
// pool task that starts after the work is gone returns at once, so the call never waits for the pool to
// reach its tasks (no deadlock when the pool is busy, or when the caller is itself a pool thread).
template <typename F>
void ParallelRows(ffi::ThreadPool& pool, int64_t nrows, const int64_t* ptr, int64_t work, F&& body) {
  const int64_t threads = work >= 2 * kParallelWork && nrows > 1 ? pool.num_threads() : 0;
  const int64_t nranges = std::min<int64_t>({4 * threads, work / kParallelWork, nrows});
  if (threads <= 1 || nranges <= 1) {
    body(int64_t(0), nrows);
    return;
  }
  struct State {
    std::vector<int64_t> bounds;
    std::atomic<int64_t> next{0}, done{0};
  };
  auto st = std::make_shared<State>();
  st->bounds.resize(nranges + 1);
  const int64_t nnz = ptr[nrows];
  for (int64_t r = 0; r <= nranges; ++r)  // the first row whose entries start at or after r / nranges of nnz
    st->bounds[r] = r == nranges ? nrows
                                 : std::lower_bound(ptr, ptr + nrows, (nnz / nranges) * r +
                                                                          (nnz % nranges) * r / nranges) - ptr;
  auto run = [st, nranges, body]() {
    for (int64_t r; (r = st->next.fetch_add(1, std::memory_order_relaxed)) < nranges;) {
      body(st->bounds[r], st->bounds[r + 1]);
      st->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t t = 0; t < std::min(threads, nranges) - 1; ++t) pool.Schedule(decltype(run)(run));
  run();
  while (st->done.load(std::memory_order_acquire) < nranges) std::this_thread::yield();
}

int64_t Product(ffi::Span<const int64_t> dims, size_t first, size_t last) {
  int64_t n = 1;
  for (size_t a = first; a < last; ++a) n *= dims[a];
  return n;
}

// A CSR pattern: row pointers and column indices (host memory), their sizes.
struct Pattern {
  const int64_t* ptr;
  const int32_t* ind;
  int64_t nrows, nnz;
};

// Patterns held by the Python side (igax/solvers/_spmv.py) under a key, so that a program names its pattern
// by the key (an attribute of the call) instead of carrying the arrays as constants: 108 MB for a matrix with
// 25M entries, copied through the compiler and stored in every executable that multiplies by it.
std::mutex patterns_mu;
std::unordered_map<uint64_t, Pattern>& Patterns() {
  static auto* m = new std::unordered_map<uint64_t, Pattern>();
  return *m;
}

bool HeldPattern(uint64_t key, Pattern* out) {
  std::lock_guard<std::mutex> lock(patterns_mu);
  auto it = Patterns().find(key);
  if (it == Patterns().end()) return false;
  *out = it->second;
  return true;
}

template <ffi::DataType DT, bool kTranspose>
ffi::Error RunCore(ffi::ThreadPool& pool, const Pattern& pat, ffi::Buffer<DT>& values, ffi::Buffer<DT>& x,
                   ffi::ResultBuffer<DT>& y) {
  using T = ffi::NativeType<DT>;
  const auto vd = values.dimensions();
  const auto xd = x.dimensions(), yd = y->dimensions();
  if (vd.size() < 1 || xd.size() != vd.size() + 1 || yd.size() != xd.size())
    return ffi::Error::InvalidArgument("igax spmv: expected indptr (r+1), indices (nnz), values (..., nnz), "
                                       "x (..., m, k), result (..., n, k)");
  const int64_t nrows = pat.nrows, nnz = pat.nnz;
  const size_t nb = vd.size() - 1;  // batch dimensions
  const int64_t m = xd[nb], k = xd[nb + 1], nout = yd[nb];
  const int64_t* ptr = pat.ptr;
  if (nrows < 0 || vd[nb] != nnz || yd[nb + 1] != k || ptr[nrows] != nnz)
    return ffi::Error::InvalidArgument("igax spmv: values, indices and indptr do not match");
  if ((kTranspose ? m : nout) != nrows)
    return ffi::Error::InvalidArgument("igax spmv: the row count of x or the result does not match indptr");
  for (size_t a = 0; a < nb; ++a)
    if (xd[a] != vd[a] || yd[a] != vd[a]) return ffi::Error::InvalidArgument("igax spmv: batch dims differ");
  const int64_t batch = Product(vd, 0, nb);
  const int32_t* ind = pat.ind;
  for (int64_t b = 0; b < batch; ++b) {
    const T* v = values.typed_data() + b * nnz;
    const T* xs = x.typed_data() + b * m * k;
    T* ys = y->typed_data() + b * nout * k;
    if (kTranspose) {
      Transpose<T>(nrows, nout, k, ptr, ind, v, xs, ys);
    } else {
      ParallelRows(pool, nrows, ptr, nnz * k,
                   [=](int64_t r0, int64_t r1) { Forward<T>(r0, r1, k, ptr, ind, v, xs, ys); });
    }
  }
  return ffi::Error::Success();
}

template <ffi::DataType DT, bool kTranspose>
ffi::Error RunSampleCore(ffi::ThreadPool& pool, const Pattern& pat, ffi::Buffer<DT>& ct, ffi::Buffer<DT>& x,
                         ffi::ResultBuffer<DT>& out) {
  using T = ffi::NativeType<DT>;
  const auto cd = ct.dimensions();
  const auto xd = x.dimensions(), od = out->dimensions();
  if (od.size() < 1 || cd.size() != od.size() + 1 || xd.size() != cd.size())
    return ffi::Error::InvalidArgument("igax spmv sample: expected indptr (r+1), indices (nnz), ct (..., n, k), "
                                       "x (..., m, k), result (..., nnz)");
  const int64_t nrows = pat.nrows, nnz = pat.nnz;
  const size_t nb = od.size() - 1;
  const int64_t nc = cd[nb], m = xd[nb], k = cd[nb + 1];
  const int64_t* ptr = pat.ptr;
  if (nrows < 0 || od[nb] != nnz || xd[nb + 1] != k || ptr[nrows] != nnz || (kTranspose ? m : nc) != nrows)
    return ffi::Error::InvalidArgument("igax spmv sample: the operands do not match the pattern");
  for (size_t a = 0; a < nb; ++a)
    if (cd[a] != od[a] || xd[a] != od[a]) return ffi::Error::InvalidArgument("igax spmv sample: batch dims differ");
  const int64_t batch = Product(od, 0, nb);
  const int32_t* ind = pat.ind;
  for (int64_t b = 0; b < batch; ++b) {
    const T* cs = ct.typed_data() + b * nc * k;
    const T* xs = x.typed_data() + b * m * k;
    T* os = out->typed_data() + b * nnz;
    ParallelRows(pool, nrows, ptr, nnz * k,
                 [=](int64_t r0, int64_t r1) { Sample<T, kTranspose>(r0, r1, k, ptr, ind, cs, xs, os); });
  }
  return ffi::Error::Success();
}

// The pattern as two operands (indptr, indices), or held under a key (see Patterns).
bool PatternOf(ffi::Buffer<ffi::S64>& indptr, ffi::Buffer<ffi::S32>& indices, Pattern* pat) {
  const auto pd = indptr.dimensions(), id = indices.dimensions();
  if (pd.size() != 1 || id.size() != 1 || pd[0] < 1) return false;
  *pat = Pattern{indptr.typed_data(), indices.typed_data(), pd[0] - 1, id[0]};
  return true;
}

const char kNotHeld[] =
    "igax spmv: the program names a CSR pattern that is no longer held (its CSRPattern was garbage "
    "collected while a compiled program using it was kept); keep the matrix or space alive, or jit again";

template <ffi::DataType DT, bool kTranspose>
ffi::Error Run(ffi::ThreadPool pool, ffi::Buffer<ffi::S64> indptr, ffi::Buffer<ffi::S32> indices,
               ffi::Buffer<DT> values, ffi::Buffer<DT> x, ffi::ResultBuffer<DT> y) {
  Pattern pat;
  if (!PatternOf(indptr, indices, &pat))
    return ffi::Error::InvalidArgument("igax spmv: expected indptr (r+1) and indices (nnz)");
  return RunCore<DT, kTranspose>(pool, pat, values, x, y);
}

template <ffi::DataType DT, bool kTranspose>
ffi::Error RunHeld(ffi::ThreadPool pool, ffi::Buffer<DT> values, ffi::Buffer<DT> x, ffi::ResultBuffer<DT> y,
                   uint64_t key) {
  Pattern pat;
  if (!HeldPattern(key, &pat)) return ffi::Error::InvalidArgument(kNotHeld);
  return RunCore<DT, kTranspose>(pool, pat, values, x, y);
}

template <ffi::DataType DT, bool kTranspose>
ffi::Error RunSample(ffi::ThreadPool pool, ffi::Buffer<ffi::S64> indptr, ffi::Buffer<ffi::S32> indices,
                     ffi::Buffer<DT> ct, ffi::Buffer<DT> x, ffi::ResultBuffer<DT> out) {
  Pattern pat;
  if (!PatternOf(indptr, indices, &pat))
    return ffi::Error::InvalidArgument("igax spmv sample: expected indptr (r+1) and indices (nnz)");
  return RunSampleCore<DT, kTranspose>(pool, pat, ct, x, out);
}

template <ffi::DataType DT, bool kTranspose>
ffi::Error RunSampleHeld(ffi::ThreadPool pool, ffi::Buffer<DT> ct, ffi::Buffer<DT> x, ffi::ResultBuffer<DT> out,
                         uint64_t key) {
  Pattern pat;
  if (!HeldPattern(key, &pat)) return ffi::Error::InvalidArgument(kNotHeld);
  return RunSampleCore<DT, kTranspose>(pool, pat, ct, x, out);
}

}  // namespace

// Called from Python (ctypes): hold a pattern under a key (the arrays stay owned, and alive, on that side),
// or release it. Registering a held key again replaces it (the same content: the key is its hash).
extern "C" void IgaxSpmvHold(uint64_t key, const int64_t* ptr, const int32_t* ind, int64_t nrows, int64_t nnz) {
  std::lock_guard<std::mutex> lock(patterns_mu);
  Patterns()[key] = Pattern{ptr, ind, nrows, nnz};
}

extern "C" void IgaxSpmvRelease(uint64_t key) {
  std::lock_guard<std::mutex> lock(patterns_mu);
  Patterns().erase(key);
}

// Arrays held the same way (igax/_held.py), copied into a buffer of the program when it runs: what a loop of
// the program reads (index maps, cells, node coordinates of a large mesh) without being a constant of it.
struct HeldArray {
  const void* data;
  int64_t nbytes;
};
std::unordered_map<uint64_t, HeldArray>& HeldArrays() {
  static auto* m = new std::unordered_map<uint64_t, HeldArray>();
  return *m;
}

extern "C" void IgaxHoldArray(uint64_t key, const void* data, int64_t nbytes) {
  std::lock_guard<std::mutex> lock(patterns_mu);
  HeldArrays()[key] = HeldArray{data, nbytes};
}

extern "C" void IgaxReleaseArray(uint64_t key) {
  std::lock_guard<std::mutex> lock(patterns_mu);
  HeldArrays().erase(key);
}

static ffi::Error FetchHeld(ffi::Result<ffi::AnyBuffer> out, uint64_t key) {
  HeldArray a;
  {
    std::lock_guard<std::mutex> lock(patterns_mu);
    auto it = HeldArrays().find(key);
    if (it == HeldArrays().end())
      return ffi::Error::InvalidArgument(
          "igax: the program reads an array that igax no longer holds (igax/_held.py); jit the function again");
    a = it->second;
  }
  if (int64_t(out->size_bytes()) != a.nbytes)
    return ffi::Error::InvalidArgument("igax: a held array does not match the program's buffer size");
  std::memcpy(out->untyped_data(), a.data, a.nbytes);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxFetchHeld, FetchHeld, ffi::Ffi::Bind().Ret<ffi::AnyBuffer>().Attr<uint64_t>("key"));

#define IGAX_SPMV_BIND_HELD(DT)        \
  ffi::Ffi::Bind()                     \
      .Ctx<ffi::ThreadPool>()          \
      .Arg<ffi::Buffer<DT>>()          \
      .Arg<ffi::Buffer<DT>>()          \
      .Ret<ffi::Buffer<DT>>()          \
      .Attr<uint64_t>("pattern")

XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxSpmvHeldForwardF64, (RunHeld<ffi::F64, false>), IGAX_SPMV_BIND_HELD(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxSpmvHeldForwardF32, (RunHeld<ffi::F32, false>), IGAX_SPMV_BIND_HELD(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxSpmvHeldTransposeF64, (RunHeld<ffi::F64, true>), IGAX_SPMV_BIND_HELD(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxSpmvHeldTransposeF32, (RunHeld<ffi::F32, true>), IGAX_SPMV_BIND_HELD(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxSpmvHeldSampleF64, (RunSampleHeld<ffi::F64, false>),
                              IGAX_SPMV_BIND_HELD(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxSpmvHeldSampleF32, (RunSampleHeld<ffi::F32, false>),
                              IGAX_SPMV_BIND_HELD(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxSpmvHeldSampleTransposeF64, (RunSampleHeld<ffi::F64, true>),
                              IGAX_SPMV_BIND_HELD(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxSpmvHeldSampleTransposeF32, (RunSampleHeld<ffi::F32, true>),
                              IGAX_SPMV_BIND_HELD(ffi::F32));

#define IGAX_SPMV_BIND(DT)             \
  ffi::Ffi::Bind()                     \
      .Ctx<ffi::ThreadPool>()          \
      .Arg<ffi::Buffer<ffi::S64>>()    \
      .Arg<ffi::Buffer<ffi::S32>>()    \
      .Arg<ffi::Buffer<DT>>()          \
      .Arg<ffi::Buffer<DT>>()          \
      .Ret<ffi::Buffer<DT>>()

XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxSpmvForwardF64, (Run<ffi::F64, false>), IGAX_SPMV_BIND(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxSpmvForwardF32, (Run<ffi::F32, false>), IGAX_SPMV_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxSpmvTransposeF64, (Run<ffi::F64, true>), IGAX_SPMV_BIND(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxSpmvTransposeF32, (Run<ffi::F32, true>), IGAX_SPMV_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxSpmvSampleF64, (RunSample<ffi::F64, false>), IGAX_SPMV_BIND(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxSpmvSampleF32, (RunSample<ffi::F32, false>), IGAX_SPMV_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxSpmvSampleTransposeF64, (RunSample<ffi::F64, true>), IGAX_SPMV_BIND(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxSpmvSampleTransposeF32, (RunSample<ffi::F32, true>), IGAX_SPMV_BIND(ffi::F32));
