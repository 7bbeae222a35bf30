// Replaces the global operator new of the sampling test binary with a counting one, so tests can
// check that hot paths allocate nothing. Kept in its own file so that the compiler never inlines
// the replacement next to its callers (GCC then warns about new/free pairs).
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

#include <gtest/gtest.h>

namespace {
int64_t g_allocations = 0;  // the tests are single-threaded
}  // namespace

int64_t AllocationCount() { return g_allocations; }

void* operator new(size_t size) {
  ++g_allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
// The array and nothrow forms too: sanitizer runtimes provide their own rather than forwarding to
// the above, and theirs must not meet our delete (std::stable_sort's buffer comes from the nothrow
// form and goes back through operator delete: ASan calls that an alloc-dealloc mismatch).
void* operator new[](size_t size) { return operator new(size); }
void* operator new(size_t size, const std::nothrow_t&) noexcept {
  ++g_allocations;
  return std::malloc(size == 0 ? 1 : size);
}
void* operator new[](size_t size, const std::nothrow_t& tag) noexcept { return operator new(size, tag); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

namespace {

TEST(AllocationCounterTest, CountsEveryNew) {
  const int64_t before = AllocationCount();
  auto a = std::make_unique<int>(1);
  auto b = std::make_unique<int[]>(4);
  EXPECT_EQ(AllocationCount() - before, 2);
}

}  // namespace
