// A host function called from a compiled program with the program's own buffers (igax/solvers/_host_call.py).
//
// jax.pure_callback hands its Python function copies of the operands (the FFI handler copies each into a new
// NumPy array, and jax places them on the device again before the call). For the direct solvers' callbacks
// the operand is the matrix values: 200 MB for 1M degree-2 spline dofs, resident while PARDISO factorises.
// Here the handler passes the addresses of the operand and result buffers to one Python dispatcher (set by
// IgaxSetHostFunction through ctypes, which takes the GIL), which reads the operands in place and writes the
// results in place. The key names the Python function (a hash of what it computes, set at lowering).

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// key, number of buffers, their addresses (operands first, then results), a message buffer and its size.
// Returns 0, or nonzero after writing a message.
typedef int (*IgaxHostFunction)(uint64_t, int64_t, void**, char*, int64_t);

static std::atomic<IgaxHostFunction> host_function{nullptr};

extern "C" void IgaxSetHostFunction(IgaxHostFunction fn) { host_function.store(fn); }

static ffi::Error HostCall(ffi::RemainingArgs args, ffi::RemainingRets rets, uint64_t key) {
  IgaxHostFunction fn = host_function.load();
  if (fn == nullptr) return ffi::Error::Internal("igax host call: no Python dispatcher is registered");
  std::vector<void*> buffers;
  buffers.reserve(args.size() + rets.size());
  for (size_t i = 0; i < args.size(); ++i) {
    auto arg = args.get<ffi::AnyBuffer>(i);
    if (arg.has_error()) return arg.error();
    buffers.push_back(arg->untyped_data());
  }
  for (size_t i = 0; i < rets.size(); ++i) {
    auto ret = rets.get<ffi::AnyBuffer>(i);
    if (ret.has_error()) return ret.error();
    buffers.push_back((*ret)->untyped_data());
  }
  std::string message(2048, '\0');
  int rc = fn(key, int64_t(buffers.size()), buffers.data(), &message[0], int64_t(message.size()) - 1);
  if (rc != 0) return ffi::Error::Internal(std::string(message.c_str()));
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(IgaxHostCall, HostCall,
                              ffi::Ffi::Bind().RemainingArgs().RemainingRets().Attr<uint64_t>("key"));
