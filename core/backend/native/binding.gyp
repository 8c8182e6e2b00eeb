{
  "targets": [
    {
      "target_name": "volseg_native",
      "sources": [
        "src/addon.cc",
        "src/pool.cc",
        "src/buffers.cc",
        "src/kernels_avx2.cc",
        "src/kernels_avx512.cc",
        "src/kernels_avx512z.cc",
        "src/kernels_portable.cc"
      ],
      "defines": ["NAPI_VERSION=8"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags": ["-O3", "-fno-math-errno", "-fno-trapping-math", "-pthread"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-fno-math-errno", "-fno-trapping-math", "-pthread"],
      "ldflags": ["-pthread"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "OTHER_CFLAGS": ["-O3"]
      }
    }
  ]
}
