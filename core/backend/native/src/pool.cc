// A small persistent thread pool. The calling thread always takes part (tid 0), so with
// `threads` = 1 there are no workers at all.
//
// Protocol: the caller publishes a job under a new generation number and wakes the workers.
// A worker joins by incrementing `active_` and then checking that the job is still open; the
// caller, once every task has been claimed, closes the job and waits only for the workers that
// joined (active_ == 0). A worker that wakes late finds the job closed and does nothing, so a
// slow wake-up never delays the caller. Workers spin briefly after a job before they sleep on a
// condition variable, which keeps back-to-back kernels cheap.
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <unistd.h>

#include "common.h"

namespace volseg {
namespace {

constexpr uint64_t kClosed = ~uint64_t(0);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

class Pool {
 public:
  explicit Pool(int threads) : threads_(threads < 1 ? 1 : threads) {
    for (int t = 1; t < threads_; ++t) workers_.emplace_back([this, t] { loop(t); });
  }
  int threads() const { return threads_; }

  void run(int64_t n, int64_t grain, TaskFn fn, void* ctx) {
    if (grain < 1) grain = 1;
    std::unique_lock<std::mutex> busy(dispatch_, std::try_to_lock);
    if (threads_ == 1 || n <= grain || !busy.owns_lock()) {
      for (int64_t i = 0; i < n; ++i) fn(ctx, i, 0);
      return;
    }
    // No worker can be inside a job here (the previous run waited for active_ == 0 and closed
    // it), so the job fields can be written.
    fn_ = fn;
    ctx_ = ctx;
    n_ = n;
    grain_ = grain;
    next_.store(0, std::memory_order_relaxed);
    const uint64_t gen = generation_.load(std::memory_order_relaxed) + 1;
    open_.store(gen, std::memory_order_seq_cst);
    {
      std::lock_guard<std::mutex> lk(m_);
      generation_.store(gen, std::memory_order_seq_cst);
    }
    if (sleeping_.load(std::memory_order_seq_cst) > 0) cv_.notify_all();
    run_chunks(0);
    open_.store(kClosed, std::memory_order_seq_cst);
    // Wait for the workers that joined (spin first, then sleep).
    const auto t0 = std::chrono::steady_clock::now();
    while (active_.load(std::memory_order_seq_cst) != 0) {
      cpu_relax();
      if (std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(500)) {
        std::unique_lock<std::mutex> lk(m_);
        done_cv_.wait(lk, [this] { return active_.load(std::memory_order_seq_cst) == 0; });
        break;
      }
    }
  }

 private:
  void run_chunks(int tid) {
    for (;;) {
      const int64_t b = next_.fetch_add(grain_, std::memory_order_relaxed);
      if (b >= n_) break;
      const int64_t e = std::min(n_, b + grain_);
      for (int64_t i = b; i < e; ++i) fn_(ctx_, i, tid);
    }
  }

  void loop(int tid) {
    uint64_t seen = 0;
    for (;;) {
      // Spin for a short while, then sleep until a new generation is published.
      const auto t0 = std::chrono::steady_clock::now();
      int spins = 0;
      while (generation_.load(std::memory_order_acquire) == seen) {
        cpu_relax();
        if ((++spins & 63) == 0 &&
            std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(200)) {
          std::unique_lock<std::mutex> lk(m_);
          sleeping_.fetch_add(1, std::memory_order_seq_cst);
          cv_.wait(lk, [&] { return generation_.load(std::memory_order_acquire) != seen; });
          sleeping_.fetch_sub(1, std::memory_order_seq_cst);
          break;
        }
      }
      seen = generation_.load(std::memory_order_acquire);
      active_.fetch_add(1, std::memory_order_seq_cst);
      if (open_.load(std::memory_order_seq_cst) == seen) run_chunks(tid);
      if (active_.fetch_sub(1, std::memory_order_seq_cst) == 1) {
        std::lock_guard<std::mutex> lk(m_);
        done_cv_.notify_all();
      }
    }
  }

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex m_, dispatch_;
  std::condition_variable cv_, done_cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<uint64_t> open_{kClosed};
  std::atomic<int> active_{0};
  std::atomic<int> sleeping_{0};
  // The current job (written only while no worker is inside a job).
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0;
  int64_t grain_ = 1;
  std::atomic<int64_t> next_{0};
};

int configured_threads() {
  const char* env = std::getenv("VOLSEG_THREADS");
  if (env && *env) {
    const int v = std::atoi(env);
    if (v >= 1 && v <= 1024) return v;
  }
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

Pool& pool() {
  // Intentionally leaked: joining threads from a static destructor at process exit can deadlock.
  static Pool* p = new Pool(configured_threads());
  return *p;
}

}  // namespace

int pool_threads() { return pool().threads(); }
void pool_run(int64_t n, int64_t grain, TaskFn fn, void* ctx) { pool().run(n, grain, fn, ctx); }

size_t weight_cache_budget() {
  static const size_t budget = [] {
    long l2 = -1;
#ifdef _SC_LEVEL2_CACHE_SIZE
    l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    if (l2 <= 0) l2 = 512 * 1024;
    const char* env = std::getenv("VOLSEG_L2_BYTES");
    if (env && *env && std::atol(env) > 0) l2 = std::atol(env);
    return static_cast<size_t>(std::min(std::max(l2 / 2, 128L * 1024), 4096L * 1024));
  }();
  return budget;
}

}  // namespace volseg
