// memfit's fake-CUDA shim for CPU-only torch builds (loaded with ctypes before `import torch`).
//
// A CPU-only libtorch has no CUDA device guard and CUDA hooks that report "not built", so fake tensors on
// cuda:0 fail on slicing, .to("cuda"), uniform_ (DeviceGuard) and backward() (autograd asks the hooks).
// This registers c10's own FakeGuardImpl for CUDA and CUDA hooks whose isBuilt() is true. Nothing is ever
// allocated on a device: torch.cuda.is_available() stays False and only FakeTensors live on "cuda".
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/core/impl/FakeGuardImpl.h>

namespace memfit {

struct CUDAHooks final : at::CUDAHooksInterface {
  explicit CUDAHooks(at::CUDAHooksArgs) {}
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return false; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return false; }
  void init() const override {}
  c10::DeviceIndex deviceCount() const override { return 1; }
  c10::DeviceIndex current_device() const override { return 0; }
  c10::DeviceIndex getCurrentDevice() const override { return 0; }
  void setCurrentDevice(c10::DeviceIndex) const override {}
  c10::DeviceIndex exchangeDevice(c10::DeviceIndex) const override { return 0; }
  c10::DeviceIndex maybeExchangeDevice(c10::DeviceIndex) const override { return 0; }
  int getNumGPUs() const override { return 1; }
  void deviceSynchronize(c10::DeviceIndex) const override {}
};

}  // namespace memfit

C10_REGISTER_GUARD_IMPL(CUDA, c10::impl::FakeGuardImpl<c10::DeviceType::CUDA>);
namespace at {
C10_REGISTER_CLASS(CUDAHooksRegistry, CUDAHooks, memfit::CUDAHooks);
}  // namespace at

extern "C" int memfit_fakecuda_loaded() { return 1; }
