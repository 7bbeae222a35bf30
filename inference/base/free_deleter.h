// A std::unique_ptr deleter that calls a C library's free function, so that no error path leaks.
// Generic on purpose: the base code names no C library; callers supply the function.
#pragma once

namespace airlock {

// `std::unique_ptr<BIO, FreeDeleter<BIO_free_all>>`. `kFree` is called only with non-null
// pointers (unique_ptr skips its deleter for null), so free functions that reject null are fine.
template <auto kFree>
struct FreeDeleter {
  template <typename T>
  void operator()(T* p) const {
    kFree(p);
  }
};

}  // namespace airlock
