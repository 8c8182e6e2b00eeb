// Output buffers for the native kernels, recycled instead of fresh from the OS.
//
// Why: a kernel's output used to be `new Float32Array(n)`, i.e. V8's calloc. Large sizes are a
// fresh mmap (glibc's mmap threshold never exceeds 32 MiB, and a 64^3 x 32 float32 volume is
// 32 MiB + a header), or heap memory that calloc first zeroes on the JS thread; either way the
// kernel then writes onto pages it has never seen, and each first touch is a page fault in which
// the OS zeroes the page. On the 2-core VMs this project runs on that costs, per MiB, ~0.1 ms
// with 2 MiB pages when the memory was freed recently, ~0.5 ms with 4 KiB pages, and up to
// ~2.4 ms when the hypervisor has taken the guest page back (measured with a C loop touching
// fresh mmaps). A 16 MiB instance-norm output computes in ~2.6 ms; its page faults cost more, and
// a unet3d step at 64^3 spent 120-290 ms of system time in them (9-13 thousand faults per step).
//
// What: allocBuffer(bytes, zero) returns an ArrayBuffer of exactly `bytes` over memory this file
// mmapped (2 MiB aligned, MADV_HUGEPAGE). When V8 frees the ArrayBuffer (at a GC, exactly when it
// would have freed a calloc'd one) its memory goes into a cache instead of back to the OS, and
// later allocations take it: already resident, no faults, and not zeroed unless asked (every
// kernel that asks for zero=false writes all of its output; the tests check that with `poison`).
//  - The cache keeps address ranges: adjacent free ranges merge, an allocation takes the smallest
//    free range that is large enough and leaves the rest free, so memory freed at one size serves
//    other sizes.
//  - It is bounded (VOLSEG_BUFFER_CACHE_MB, default 512; 0 turns recycling off and every kernel
//    allocates as before): over the cap, the longest-idle memory is unmapped first; memory idle
//    for more than VOLSEG_BUFFER_CACHE_AGE_MS (default 2000) is unmapped at the next allocation
//    or free; and an allocation that finds no free range large enough first unmaps at least as
//    much cached memory as it maps, so its new pages are ones the OS just got back. Cached memory is resident but not tfjs's: process RSS can exceed what it
//    would be without the cache by up to the cap (bufferCache().cachedBytes says how much).
//  - releaseBuffer(ab) hands a buffer back before V8 would: it detaches the ArrayBuffer (its views read
//    as empty from then on) and, the backing store having no other owner, its memory goes into the
//    cache at once. native-kernels.ts recycles a buffer whose last tensor entry the cpu backend
//    deleted, and whose values were never handed out (dataSync, data), as a whole ArrayBuffer for the
//    next output of its size (V8, which counts every live backing store as external memory, then
//    sees no growth to start Mark-Compacts for: about a dozen per 64^3 unet3d step without it); what
//    its pool does not keep (over the cap, idle, trimmed) comes here through releaseBuffer. Only
//    buffers this file made and still lent are detached.
//  - Only sizes >= VOLSEG_BUFFER_MIN_KB (default 1024) come from here; for smaller ones
//    allocBuffer returns null and the caller allocates normally.
//  - The ArrayBuffer is made with V8's own API (a BackingStore with a deleter), because N-API's
//    external array buffers run their finalizer from the event loop (node's SetImmediate), which
//    a synchronous training step never reaches; V8 calls the deleter when it frees the backing
//    store (possibly on a GC thread, hence the mutex). That ties this file to the V8 ABI of the
//    Node.js version it was built for: under any other V8 version allocBuffer returns null.
#define NAPI_VERSION 8
#include <node_api.h>
#include <v8-version.h>
#include <v8.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "common.h"

#if defined(__linux__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#define VOLSEG_HAVE_MMAP 1
#endif

namespace volseg {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kHuge = size_t(2) << 20;

struct Range {
  size_t len;
  Clock::time_point since;  // when it was last freed (or merged with a freed neighbour)
};

struct Stats {
  double hits = 0, misses = 0, hitBytes = 0, missBytes = 0, evictedBytes = 0, peakCachedBytes = 0;
};

size_t env_size(const char* name, size_t def, size_t unit) {
  const char* v = std::getenv(name);
  if (!v || !*v) return def * unit;
  char* end = nullptr;
  const double d = std::strtod(v, &end);
  if (end == v || d < 0) return def * unit;
  return static_cast<size_t>(d * static_cast<double>(unit));
}

// Freed chunks are kept as address ranges: adjacent free ranges merge, an allocation takes the
// smallest free range that is large enough (best fit) and leaves the rest free, so memory freed
// at one size serves requests of other sizes (without that, a cache of exact sizes holds memory
// of the wrong sizes while requests miss, and resident memory grows).
class BufferCache {
 public:
  BufferCache()
      : capBytes_(env_size("VOLSEG_BUFFER_CACHE_MB", 512, size_t(1) << 20)),
        minBytes_(env_size("VOLSEG_BUFFER_MIN_KB", 1024, 1024)),
        maxAgeMs_(static_cast<double>(env_size("VOLSEG_BUFFER_CACHE_AGE_MS", 2000, 1))) {}

  // A chunk of `*cap` >= bytes bytes, recycled when possible; null on failure.
  void* take(size_t bytes, size_t* cap, bool* recycled) {
    const size_t want = round_cap(bytes);
    std::vector<Piece> victims;
    uintptr_t got = 0;
    {
      std::lock_guard<std::mutex> lk(m_);
      expire_locked(victims);
      auto it = bySize_.lower_bound(want);
      if (it != bySize_.end()) {
        const uintptr_t a = it->second;
        const Range r = free_.at(a);
        erase_locked(a, r.len);
        if (r.len > want) insert_locked(a + want, {r.len - want, r.since});
        got = a;
        stats_.hits += 1;
        stats_.hitBytes += static_cast<double>(bytes);
      } else {
        stats_.misses += 1;
        stats_.missBytes += static_cast<double>(bytes);
        // No free range is large enough: give the OS back (longest idle first) at least as much
        // as the new mapping needs. Its fresh pages are then those just freed, which the OS (and,
        // on a VM, the hypervisor) still has at hand, rather than memory nobody touched for long
        // (the slowest first touch there is), and cache plus live memory do not grow.
        size_t freed = 0;
        while (freed < want && !free_.empty()) {
          auto oldest = free_.begin();
          for (auto it = free_.begin(); it != free_.end(); ++it)
            if (it->second.since < oldest->second.since) oldest = it;
          freed += oldest->second.len;
          victims.push_back({oldest->first, oldest->second.len});
          erase_locked(oldest->first, oldest->second.len);
        }
      }
    }
    release(victims);
    *cap = want;
    if (got) {
      *recycled = true;
      lend(got);
      return reinterpret_cast<void*>(got);
    }
    *recycled = false;
    void* p = map_chunk(want);
    if (p) lend(reinterpret_cast<uintptr_t>(p));
    return p;
  }

  // Whether p is a chunk take() handed out and give() has not had back.
  bool lent(const void* p) {
    std::lock_guard<std::mutex> lk(m_);
    return lent_.count(reinterpret_cast<uintptr_t>(p)) != 0;
  }

  // Called by V8's deleter (any thread).
  void give(void* p, size_t cap) {
    std::vector<Piece> victims;
    {
      std::lock_guard<std::mutex> lk(m_);
      lent_.erase(reinterpret_cast<uintptr_t>(p));
      if (capBytes_ == 0) {
        victims.push_back({reinterpret_cast<uintptr_t>(p), cap});
      } else {
        uintptr_t a = reinterpret_cast<uintptr_t>(p);
        size_t len = cap;
        // Merge with the free neighbours.
        auto next = free_.lower_bound(a);
        if (next != free_.begin()) {
          auto prev = std::prev(next);
          if (prev->first + prev->second.len == a) {
            const uintptr_t pa = prev->first;
            const size_t pl = prev->second.len;
            erase_locked(pa, pl);
            a = pa;
            len += pl;
          }
        }
        next = free_.lower_bound(a + len);
        if (next != free_.end() && next->first == a + len) {
          const uintptr_t na = next->first;
          const size_t nl = next->second.len;
          erase_locked(na, nl);
          len += nl;
        }
        insert_locked(a, {len, Clock::now()});
        if (static_cast<double>(cached_) > stats_.peakCachedBytes)
          stats_.peakCachedBytes = static_cast<double>(cached_);
        shrink_locked(victims);
      }
      expire_locked(victims);
    }
    release(victims);
  }

  // Unmaps the longest-idle cached memory until at most `limit` bytes are cached (the cap, or less
  // where the caller holds recycled memory of its own).
  void shrink_to(size_t limit) {
    std::vector<Piece> victims;
    {
      std::lock_guard<std::mutex> lk(m_);
      shrink_locked(victims, limit);
    }
    release(victims);
  }

  void trim() {
    std::vector<Piece> victims;
    {
      std::lock_guard<std::mutex> lk(m_);
      while (!free_.empty()) {
        const auto it = free_.begin();
        victims.push_back({it->first, it->second.len});
        erase_locked(it->first, it->second.len);
      }
    }
    release(victims);
  }

  void configure(double capBytes, double minBytes, double maxAgeMs, int poison) {
    std::vector<Piece> victims;
    {
      std::lock_guard<std::mutex> lk(m_);
      if (capBytes >= 0) capBytes_ = static_cast<size_t>(capBytes);
      if (minBytes >= 0) minBytes_ = static_cast<size_t>(minBytes);
      if (maxAgeMs >= 0) maxAgeMs_ = maxAgeMs;
      if (poison >= 0) poison_ = poison != 0;
      shrink_locked(victims);
    }
    release(victims);
  }

  size_t capBytes() { std::lock_guard<std::mutex> lk(m_); return capBytes_; }
  size_t minBytes() { std::lock_guard<std::mutex> lk(m_); return minBytes_; }
  bool poison() { std::lock_guard<std::mutex> lk(m_); return poison_; }
  void snapshot(Stats* s, size_t* cached, size_t* cap, size_t* minB, double* age, bool* poison) {
    std::lock_guard<std::mutex> lk(m_);
    *s = stats_;
    *cached = cached_;
    *cap = capBytes_;
    *minB = minBytes_;
    *age = maxAgeMs_;
    *poison = poison_;
  }

 private:
  struct Piece {
    uintptr_t addr;
    size_t len;
  };
  static constexpr size_t kPage = 4096;

  static size_t round_cap(size_t bytes) { return std::max(kPage, (bytes + kPage - 1) / kPage * kPage); }

  static void* map_chunk(size_t cap) {
#ifdef VOLSEG_HAVE_MMAP
    if (cap < kHuge) {
      void* p = mmap(nullptr, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANON, -1, 0);
      return p == MAP_FAILED ? nullptr : p;
    }
    // 2 MiB aligned, so every whole 2 MiB of the chunk can be a huge page.
    const size_t span = cap + kHuge;
    void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANON, -1, 0);
    if (raw == MAP_FAILED) return nullptr;
    const uintptr_t b = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t a = (b + kHuge - 1) & ~(uintptr_t(kHuge) - 1);
    if (a > b) munmap(raw, a - b);
    const uintptr_t end = b + span, used = a + cap;
    if (end > used) munmap(reinterpret_cast<void*>(used), end - used);
#if defined(MADV_HUGEPAGE)
    if (huge_pages_wanted()) madvise(reinterpret_cast<void*>(a), cap / kHuge * kHuge, MADV_HUGEPAGE);
#endif
    return reinterpret_cast<void*>(a);
#else
    return nullptr;  // no mmap: the cache is not used (allocBuffer returns null)
#endif
  }

  static bool huge_pages_wanted() {
    const char* env = std::getenv("VOLSEG_HUGEPAGES");
    return !(env && std::strcmp(env, "0") == 0);
  }

  void lend(uintptr_t a) {
    std::lock_guard<std::mutex> lk(m_);
    lent_.insert(a);
  }

  void insert_locked(uintptr_t a, Range r) {
    free_.emplace(a, r);
    bySize_.emplace(r.len, a);
    cached_ += r.len;
  }

  void erase_locked(uintptr_t a, size_t len) {
    auto range = bySize_.equal_range(len);
    for (auto it = range.first; it != range.second; ++it)
      if (it->second == a) {
        bySize_.erase(it);
        break;
      }
    free_.erase(a);
    cached_ -= len;
  }

  // Over the cap: unmap the tails of the longest-idle ranges until it fits.
  void shrink_locked(std::vector<Piece>& victims) { shrink_locked(victims, capBytes_); }
  void shrink_locked(std::vector<Piece>& victims, size_t limit) {
    while (cached_ > limit && !free_.empty()) {
      auto oldest = free_.begin();
      for (auto it = free_.begin(); it != free_.end(); ++it)
        if (it->second.since < oldest->second.since) oldest = it;
      const uintptr_t a = oldest->first;
      const Range r = oldest->second;
      const size_t excess = (cached_ - limit + kPage - 1) / kPage * kPage;
      erase_locked(a, r.len);
      if (excess < r.len) {
        insert_locked(a, {r.len - excess, r.since});
        victims.push_back({a + (r.len - excess), excess});
      } else {
        victims.push_back({a, r.len});
      }
    }
  }

  void expire_locked(std::vector<Piece>& victims) {
    if (free_.empty()) return;
    const auto now = Clock::now();
    for (auto it = free_.begin(); it != free_.end();) {
      const auto next = std::next(it);
      if (std::chrono::duration<double, std::milli>(now - it->second.since).count() > maxAgeMs_) {
        victims.push_back({it->first, it->second.len});
        erase_locked(it->first, it->second.len);
      }
      it = next;
    }
  }

  void release(std::vector<Piece>& victims) {
    double bytes = 0;
    for (const Piece& v : victims) {
#ifdef VOLSEG_HAVE_MMAP
      munmap(reinterpret_cast<void*>(v.addr), v.len);
#endif
      bytes += static_cast<double>(v.len);
    }
    if (bytes > 0) {
      std::lock_guard<std::mutex> lk(m_);
      stats_.evictedBytes += bytes;
    }
  }

  std::mutex m_;
  std::map<uintptr_t, Range> free_;              // free ranges by address
  std::multimap<size_t, uintptr_t> bySize_;      // the same, by length
  std::unordered_set<uintptr_t> lent_;           // chunks handed out and not yet given back
  size_t cached_ = 0;
  size_t capBytes_, minBytes_;
  double maxAgeMs_;
  bool poison_ = false;
  Stats stats_;
};

BufferCache& cache() {
  // Intentionally leaked: V8 frees backing stores (and calls the deleter) during isolate teardown.
  static BufferCache* c = new BufferCache();
  return *c;
}

void on_backing_store_free(void* data, size_t /*length*/, void* capAsPtr) {
  cache().give(data, reinterpret_cast<size_t>(capAsPtr));
}

// Fills [p, p + bytes) with the byte pattern `v` on the pool's threads.
void parallel_fill(void* p, size_t bytes, int v) {
  const int64_t piece = int64_t(1) << 20;
  const int64_t n = (static_cast<int64_t>(bytes) + piece - 1) / piece;
  uint8_t* base = static_cast<uint8_t*>(p);
  parallel_for(n, [&](int64_t i, int) {
    const int64_t b = i * piece, e = std::min<int64_t>(static_cast<int64_t>(bytes), b + piece);
    std::memset(base + b, v, static_cast<size_t>(e - b));
  });
}

// The V8 path is usable: not a sandboxed V8 (external backing stores are not allowed there), and
// the V8 that runs is the major.minor version whose headers this was compiled against (one per
// Node.js major version; its C++ ABI is not stable across them).
bool v8_path_ok() {
#if defined(V8_ENABLE_SANDBOX)
  return false;
#else
  static const bool ok = [] {
    char want[32];
    std::snprintf(want, sizeof(want), "%d.%d.", V8_MAJOR_VERSION, V8_MINOR_VERSION);
    const char* have = v8::V8::GetVersion();
    return have && std::strncmp(have, want, std::strlen(want)) == 0;
  }();
  return ok;
#endif
}

napi_value null_value(napi_env env) {
  napi_value v;
  napi_get_null(env, &v);
  return v;
}

napi_value number_value(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

}  // namespace

bool buffer_cache_available() { return v8_path_ok() && cache().capBytes() > 0; }

// allocBuffer(bytes, zero, shared?) -> ArrayBuffer | SharedArrayBuffer | null
napi_value AllocBuffer(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 1) return null_value(env);
  double bytesD = 0;
  bool zero = true;
  if (napi_get_value_double(env, argv[0], &bytesD) != napi_ok || !(bytesD >= 1) || bytesD > 1e15)
    return null_value(env);
  if (argc >= 2) napi_get_value_bool(env, argv[1], &zero);
  // shared: a SharedArrayBuffer over the same memory, which worker threads can read (a swap-out's copy
  // off the main thread); its backing store is freed when no thread references it any more.
  bool shared = false;
  if (argc >= 3) napi_get_value_bool(env, argv[2], &shared);
  const size_t bytes = static_cast<size_t>(bytesD);
  if (!buffer_cache_available() || bytes < cache().minBytes()) return null_value(env);
  size_t cap = 0;
  bool recycled = false;
  void* p = cache().take(bytes, &cap, &recycled);
  if (!p) return null_value(env);
  if (zero) {
    if (recycled) parallel_fill(p, bytes, 0);  // a fresh mapping is zero already
  } else if (cache().poison()) {
    parallel_fill(p, bytes, 0xff);  // all-ones float32 is a NaN: shows outputs a kernel leaves unwritten
  }
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  v8::Local<v8::Value> value;
  if (shared) {
    std::unique_ptr<v8::BackingStore> store =
        v8::SharedArrayBuffer::NewBackingStore(p, bytes, on_backing_store_free, reinterpret_cast<void*>(cap));
    value = v8::SharedArrayBuffer::New(isolate, std::shared_ptr<v8::BackingStore>(std::move(store)));
  } else {
    std::unique_ptr<v8::BackingStore> store =
        v8::ArrayBuffer::NewBackingStore(p, bytes, on_backing_store_free, reinterpret_cast<void*>(cap));
    value = v8::ArrayBuffer::New(isolate, std::shared_ptr<v8::BackingStore>(std::move(store)));
  }
  // A napi_value is a v8::Local's slot pointer (node's v8impl::JsValueFromV8LocalValue); the Local
  // lives in the HandleScope V8 opened for this callback, like every napi_value made here.
  return reinterpret_cast<napi_value>(*value);
}

// releaseBuffer(ab, maxCachedBytes?) -> bool: detaches an ArrayBuffer that allocBuffer made (not a
// SharedArrayBuffer), which frees its backing store now if nothing else holds it; false (and nothing
// done) for any other buffer. The caller guarantees that no view of it is read afterwards. With
// maxCachedBytes, the cache then unmaps its longest-idle memory down to that (the caller's own pool of
// recycled buffers shares the cap).
napi_value ReleaseBuffer(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_value result;
  napi_get_boolean(env, false, &result);
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 1) return result;
  bool isAb = false;
  if (napi_is_arraybuffer(env, argv[0], &isAb) != napi_ok || !isAb) return result;
  void* data = nullptr;
  size_t len = 0;
  if (napi_get_arraybuffer_info(env, argv[0], &data, &len) != napi_ok || !data || !cache().lent(data)) return result;
  if (napi_detach_arraybuffer(env, argv[0]) != napi_ok) return result;
  double limit = -1;
  if (argc >= 2 && napi_get_value_double(env, argv[1], &limit) == napi_ok && limit >= 0)
    cache().shrink_to(static_cast<size_t>(limit));
  napi_get_boolean(env, true, &result);
  return result;
}

// bufferCache(config?) -> stats; config fields (all optional): capBytes, minBytes, maxAgeMs,
// poison (bool), trim (bool: unmap every cached chunk now).
napi_value BufferCacheInfo(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc >= 1) {
    napi_valuetype t;
    napi_typeof(env, argv[0], &t);
    if (t == napi_object) {
      auto num = [&](const char* k) {
        bool has = false;
        napi_has_named_property(env, argv[0], k, &has);
        if (!has) return -1.0;
        napi_value v;
        double d = -1;
        napi_get_named_property(env, argv[0], k, &v);
        if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0)) return -1.0;
        return d;
      };
      auto flag = [&](const char* k) {
        bool has = false;
        napi_has_named_property(env, argv[0], k, &has);
        if (!has) return -1;
        napi_value v;
        bool b = false;
        napi_get_named_property(env, argv[0], k, &v);
        if (napi_get_value_bool(env, v, &b) != napi_ok) return -1;
        return b ? 1 : 0;
      };
      cache().configure(num("capBytes"), num("minBytes"), num("maxAgeMs"), flag("poison"));
      if (flag("trim") == 1) cache().trim();
    }
  }
  Stats s;
  size_t cached, cap, minB;
  double age;
  bool poison;
  cache().snapshot(&s, &cached, &cap, &minB, &age, &poison);
  napi_value obj, v;
  napi_create_object(env, &obj);
  napi_get_boolean(env, v8_path_ok() && cap > 0, &v);
  napi_set_named_property(env, obj, "enabled", v);
  napi_set_named_property(env, obj, "capBytes", number_value(env, static_cast<double>(cap)));
  napi_set_named_property(env, obj, "minBytes", number_value(env, static_cast<double>(minB)));
  napi_set_named_property(env, obj, "maxAgeMs", number_value(env, age));
  napi_get_boolean(env, poison, &v);
  napi_set_named_property(env, obj, "poison", v);
  napi_set_named_property(env, obj, "cachedBytes", number_value(env, static_cast<double>(cached)));
  napi_set_named_property(env, obj, "peakCachedBytes", number_value(env, s.peakCachedBytes));
  napi_set_named_property(env, obj, "hits", number_value(env, s.hits));
  napi_set_named_property(env, obj, "misses", number_value(env, s.misses));
  napi_set_named_property(env, obj, "hitBytes", number_value(env, s.hitBytes));
  napi_set_named_property(env, obj, "missBytes", number_value(env, s.missBytes));
  napi_set_named_property(env, obj, "evictedBytes", number_value(env, s.evictedBytes));
  return obj;
}

}  // namespace volseg
