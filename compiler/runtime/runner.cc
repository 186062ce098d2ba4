// mlc-runner: run an mlc bundle on a device without Python.
//
//   mlc-runner BUNDLE_DIR [--input NAME=FILE]... [--output-dir DIR] [--raw]
//              [--repeat N] [--warmup N] [--threads N]
//
// It loads a bundle as compiler/runtime/loader.py does (that file is the reference semantics):
// the runtime libraries globally, model.so by absolute path, one VM initialised with the pooled
// allocator, then main(*inputs, *weights). Inputs are .npy files, or raw binary for inputs of
// static shape; outputs go to DIR/<name>.npy (DIR/<name>.bin with --raw). stdout gets one line,
// "latency_ms min=X median=Y p90=Z runs=N". Every error is one "error: ..." line on stderr;
// exit 2 for bad arguments or inputs, 1 for a damaged bundle or a runtime failure.

#include <dlfcn.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace ffi = tvm::ffi;
namespace fs = std::filesystem;

namespace {

constexpr int kBadInput = 2;   // bad arguments or input files: the caller's mistake
constexpr int kFailure = 1;    // a damaged bundle or a runtime failure
constexpr size_t kAlign = 64;  // compiled kernels use aligned vector loads on every tensor
constexpr DLDevice kCPU{kDLCPU, 0};
constexpr int kPooledAllocator = 2;

struct Fail {
  int code;
  std::string message;
};

template <typename... T>
std::string cat(const T&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}
template <typename... T>
[[noreturn]] void fail(int code, const T&... parts) {
  throw Fail{code, cat(parts...)};
}
std::string q(const std::string& s) { return "'" + s + "'"; }  // quoted as loader.py quotes

struct DType {
  const char* name;  // as the manifest and TVM spell it
  char kind;         // numpy's kind character in an .npy descr
  int size;
};
constexpr DType kDTypes[] = {
    {"float16", 'f', 2}, {"float32", 'f', 4}, {"float64", 'f', 8}, {"int8", 'i', 1},
    {"int16", 'i', 2},   {"int32", 'i', 4},   {"int64", 'i', 8},   {"uint8", 'u', 1},
    {"uint16", 'u', 2},  {"uint32", 'u', 4},  {"uint64", 'u', 8},  {"bool", 'b', 1},
    {"bfloat16", 'V', 2},  // weights of --precision bf16 bundles; never an .npy input
};
const DType* find_dtype(const std::string& name, char kind = 0, int size = 0) {
  for (const DType& d : kDTypes)
    if (kind ? d.kind == kind && d.size == size : name == d.name) return &d;
  return nullptr;
}

struct Dim {
  int64_t value;       // the fixed size, or -1 for a symbolic dim
  std::string symbol;  // its name
};
struct Spec {
  std::string name;
  const DType* dtype;
  std::vector<Dim> dims;
  bool is_static() const {
    return std::all_of(dims.begin(), dims.end(), [](const Dim& d) { return d.value >= 0; });
  }
};
struct Weight {
  const DType* dtype;
  std::vector<int64_t> shape;
  uint64_t offset, nbytes;
};
struct Manifest {
  std::vector<Spec> inputs, outputs;
  std::vector<Weight> weights;
  std::vector<std::string> runtime_libs, cpu_features;
  std::string arch, target;
};

template <typename T, typename F>
std::string join(const std::vector<T>& items, F show, const char* open, const char* close) {
  std::string s = open;
  for (size_t i = 0; i < items.size(); ++i) s += (i ? ", " : "") + show(items[i]);
  return s + close;
}
std::string fmt(const std::vector<Dim>& dims) {
  return join(dims, [](const Dim& d) { return d.value >= 0 ? std::to_string(d.value) : d.symbol; },
              "[", "]");
}
std::string fmt(const std::vector<int64_t>& shape) {
  return join(shape, [](int64_t d) { return std::to_string(d); }, "[", "]");
}
std::string describe(const Spec& s) { return cat(s.name, ": ", s.dtype->name, fmt(s.dims)); }

// The byte size of a tensor; false when a dim is negative or the product overflows.
bool byte_size(const std::vector<int64_t>& shape, int itemsize, uint64_t* out) {
  uint64_t n = static_cast<uint64_t>(itemsize);
  for (int64_t d : shape)
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  *out = n;
  return true;
}

std::string read_file(const fs::path& path, int code, const std::string& what) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream data;
  if (f) data << f.rdbuf();
  if (!f) fail(code, "cannot read ", what, " ", q(path.string()), ": ", std::strerror(errno));
  return data.str();
}

// ---- manifest.json, through TVM-FFI's own JSON parser (tvm/ffi/extra/json.h) ----

using JObject = ffi::json::Object;
using JArray = ffi::json::Array;

[[noreturn]] void damaged(const std::string& what) {
  fail(kFailure, "manifest.json is damaged: ", what);
}
ffi::Any get(const JObject& obj, const char* key, const std::string& where) {
  auto it = obj.find(ffi::String(key));
  if (it == obj.end()) damaged(cat(where, " has no \"", key, "\""));
  return (*it).second;
}
template <typename T>
T as(const ffi::Any& value, const std::string& where, const char* expected) {
  std::optional<T> v = value.as<T>();  // strict: no int <-> float or bool -> int conversions
  if (!v.has_value()) damaged(cat(where, " must be ", expected));
  return *v;
}
std::string str(const ffi::Any& v, const std::string& where) {
  return std::string(as<ffi::String>(v, where, "a string"));
}
int64_t size(const ffi::Any& v, const std::string& where) {
  int64_t i = as<int64_t>(v, where, "an integer");
  if (i < 0) damaged(where + " must not be negative");
  return i;
}
JArray list(const JObject& obj, const char* key, const std::string& where) {
  return as<JArray>(get(obj, key, where), cat(where, ".", key), "a list");
}
const DType* dtype_of(const JObject& e, const std::string& where) {
  std::string name = str(get(e, "dtype", where), where + ".dtype");
  if (const DType* d = find_dtype(name)) return d;
  fail(kFailure, where, " has dtype ", name, ", which mlc-runner does not support");
}

std::vector<Spec> read_specs(const JObject& root, const char* key) {
  std::vector<Spec> specs;
  for (const ffi::Any& item : list(root, key, "manifest")) {
    std::string where = cat(key, "[", specs.size(), "]");
    JObject e = as<JObject>(item, where, "an object");
    Spec s{str(get(e, "name", where), where + ".name"), dtype_of(e, where), {}};
    for (const ffi::Any& d : list(e, "shape", where)) {
      if (auto symbol = d.as<ffi::String>()) s.dims.push_back(Dim{-1, std::string(*symbol)});
      else s.dims.push_back(Dim{size(d, where + ".shape"), ""});
    }
    specs.push_back(std::move(s));
  }
  return specs;
}

Manifest read_manifest(const fs::path& bundle) {
  ffi::String error;
  ffi::Any root_value =
      ffi::json::Parse(read_file(bundle / "manifest.json", kFailure, "manifest"), &error);
  if (!error.empty()) damaged(std::string(error));
  JObject root = as<JObject>(root_value, "the manifest", "an object");
  if (get(root, "format_version", "manifest").as<int64_t>() != 1)
    fail(kFailure, "bundle format version is not supported: mlc-runner reads version 1; "
                   "recompile the model with a matching mlc");
  Manifest m{read_specs(root, "inputs"), read_specs(root, "outputs"), {}, {}, {}, "", ""};
  for (const ffi::Any& item : list(root, "weights", "manifest")) {
    std::string where = cat("weights[", m.weights.size(), "]");
    JObject e = as<JObject>(item, where, "an object");
    Weight w{dtype_of(e, where), {}, static_cast<uint64_t>(size(get(e, "offset", where), where)),
             static_cast<uint64_t>(size(get(e, "nbytes", where), where))};
    for (const ffi::Any& d : list(e, "shape", where)) w.shape.push_back(size(d, where));
    uint64_t n;
    if (!byte_size(w.shape, w.dtype->size, &n) || n != w.nbytes || w.offset % kAlign)
      damaged(where + " has an inconsistent shape, size or offset");
    m.weights.push_back(std::move(w));
  }
  for (const ffi::Any& lib : list(root, "runtime_libs", "manifest")) {
    m.runtime_libs.push_back(str(lib, "runtime_libs"));
    if (m.runtime_libs.back().find('/') != std::string::npos) damaged("unsafe runtime library");
  }
  JObject target = as<JObject>(get(root, "target", "manifest"), "target", "an object");
  m.target = str(get(target, "name", "target"), "target.name");
  JObject needs = as<JObject>(get(target, "requires", "target"), "target.requires", "an object");
  m.arch = str(get(needs, "arch", "target.requires"), "target.requires.arch");
  if (needs.count(ffi::String("cpu_features")))
    for (const ffi::Any& f : list(needs, "cpu_features", "target.requires"))
      m.cpu_features.push_back(str(f, "cpu_features"));
  return m;
}

// ---- inputs ----

struct OwnedAlloc {  // 64-byte-aligned storage that the tensor owns
  void AllocData(DLTensor* t) {
    size_t n = (ffi::GetDataSize(*t) + kAlign - 1) / kAlign * kAlign;
    t->data = std::aligned_alloc(kAlign, n ? n : kAlign);
    if (!t->data) throw std::bad_alloc();
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};
struct ViewAlloc {  // a view of memory that outlives the tensor (the weights mapping)
  void* data;
  void AllocData(DLTensor* t) { t->data = data; }
  void FreeData(DLTensor*) {}
};

struct Npy {
  std::string descr;
  bool fortran = false;
  std::vector<int64_t> shape;
};

// numpy writes the header as a Python dict literal,
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }; each value follows its key.
const char* parse_npy_header(const std::string& h, Npy* out) {
  constexpr size_t npos = std::string::npos;
  auto value = [&](const std::string& key) {
    size_t at = h.find("'" + key + "':");
    return at == npos ? npos : h.find_first_not_of(' ', at + key.size() + 3);
  };
  size_t descr = value("descr"), fortran = value("fortran_order"), shape = value("shape");
  if (descr == npos || fortran == npos || shape == npos) return "the header lacks a key";
  size_t end = h.find('\'', descr + 1);
  if (h[descr] != '\'' || end == npos) return "structured dtypes are not supported";
  out->descr = h.substr(descr + 1, end - descr - 1);
  out->fortran = h.compare(fortran, 4, "True") == 0;
  if (!out->fortran && h.compare(fortran, 5, "False") != 0) return "malformed fortran_order";
  if (h[shape] != '(') return "malformed shape";
  for (size_t i = shape + 1;;) {
    if ((i = h.find_first_not_of(' ', i)) != npos && h[i] == ')') return nullptr;
    char* stop;
    errno = 0;
    long long dim = i == npos ? -1 : std::strtoll(h.c_str() + i, &stop, 10);
    if (dim < 0 || stop == h.c_str() + i || errno) return "malformed shape";
    out->shape.push_back(dim);
    i = h.find_first_not_of(' ', stop - h.c_str());
    if (i == npos || (h[i] != ',' && h[i] != ')')) return "malformed shape";
    i += h[i] == ',';
  }
}

struct Input {
  std::vector<int64_t> shape;
  const DType* dtype;
  std::string bytes;
  size_t offset;  // where the data starts in `bytes`
};

Input read_input(const Spec& spec, const std::string& path) {
  std::string where = cat("input ", q(spec.name), ": ", q(path));
  bool npy = fs::path(path).extension() == ".npy";
  if (!npy && !spec.is_static())
    fail(kBadInput, where, " is raw data, which cannot give the shape of ", describe(spec),
         "; use a .npy file");
  Input in{{}, spec.dtype, read_file(path, kBadInput, cat("the file for input ", q(spec.name))),
           0};
  const std::string& b = in.bytes;
  if (!npy) {
    for (const Dim& d : spec.dims) in.shape.push_back(d.value);
  } else {
    int major = b.size() >= 8 ? static_cast<unsigned char>(b[6]) : 0;
    size_t len_size = major == 1 ? 2 : 4, len = 0;
    if (b.compare(0, 6, "\x93NUMPY") != 0 || major < 1 || major > 3 || b.size() < 8 + len_size)
      fail(kBadInput, where, " is not a valid .npy file: bad magic or truncated");
    for (size_t k = 0; k < len_size; ++k)
      len |= static_cast<size_t>(static_cast<unsigned char>(b[8 + k])) << (8 * k);
    in.offset = 8 + len_size + len;
    Npy h;
    const char* why = in.offset > b.size() ? "truncated header"
                                           : parse_npy_header(b.substr(8 + len_size, len), &h);
    if (why) fail(kBadInput, where, " is not a valid .npy file: ", why);
    if (h.fortran)
      fail(kBadInput, where, " is in Fortran order; save a C-order array (np.ascontiguousarray)");
    const std::string& d = h.descr;
    if (d.size() >= 3 && std::strchr("<|=", d[0]) && std::isdigit(static_cast<unsigned char>(d[2])))
      in.dtype = find_dtype("", d[1], std::atoi(d.c_str() + 2));
    else
      in.dtype = nullptr;  // big-endian, or a numpy dtype TVM has no name for
    if (!in.dtype)
      fail(kBadInput, "input ", q(spec.name), " has numpy dtype ", q(d), " in ", q(path),
           ", expected ", spec.dtype->name);
    in.shape = h.shape;
  }
  uint64_t want = 0, have = b.size() - in.offset;
  if (!byte_size(in.shape, in.dtype->size, &want))
    fail(kBadInput, where, " has an impossibly large shape ", fmt(in.shape));
  if (have != want)
    fail(kBadInput, where, have < want ? " is truncated: " : " is too long: ", "it holds ", have,
         " bytes of data, and ", in.dtype->name, fmt(in.shape), " needs ", want);
  return in;
}

// The same checks, in the same order and words, as loader.py's _check and _check_shape.
void check_input(const Spec& spec, const Input& in, std::map<std::string, int64_t>* bound) {
  std::string name = "input " + q(spec.name);
  if (in.dtype != spec.dtype)
    fail(kBadInput, name, " has dtype ", in.dtype->name, ", expected ", spec.dtype->name);
  if (in.shape.size() != spec.dims.size())
    fail(kBadInput, name, " has shape ", fmt(in.shape), ", expected ", spec.dims.size(),
         " dimensions ", fmt(spec.dims));
  for (size_t axis = 0; axis < in.shape.size(); ++axis) {
    int64_t got = in.shape[axis];
    const Dim& want = spec.dims[axis];
    if (want.value == got) continue;
    if (want.value < 0) {
      auto [it, fresh] = bound->emplace(want.symbol, got);
      if (fresh || it->second == got) continue;
      fail(kBadInput, name, " has ", got, " at axis ", axis, " for dim ", q(want.symbol),
           ", but another input already set ", q(want.symbol), " = ", it->second);
    }
    fail(kBadInput, name, " has shape ", fmt(in.shape), ", expected ", fmt(spec.dims), " (axis ",
         axis, " must be ", want.value, ")");
  }
}

// ---- the host, the outputs, the command line ----

// Ask Linux for this process's use of AMX tile data (Linux 5.16+ grants it on request; without
// it the first tile instruction of an AmxMatmul kernel kills the process). True where granted.
bool request_amx() {
#if defined(__linux__) && defined(__x86_64__)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

void check_host(const Manifest& m) {
#if defined(__x86_64__)
  const std::string machine = "x86_64", flags = "flags";
#elif defined(__aarch64__)
  const std::string machine = "aarch64", flags = "Features";
#else
  const std::string machine = m.arch, flags = "?";  // no check on other architectures
#endif
  if (m.arch != machine)
    fail(kFailure, "bundle was compiled for ", m.arch, ", but this runner is built for ", machine);
  // Only this architecture's line counts: qemu-user shows the x86-64 host's /proc/cpuinfo.
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind(flags, 0) != 0) continue;
    std::string have = " " + line.substr(line.find(':') + 1) + " ", missing;
    for (char& c : have) c = std::isspace(static_cast<unsigned char>(c)) ? ' ' : c;
    for (const std::string& f : m.cpu_features)
      if (have.find(" " + f + " ") == std::string::npos)
        missing += (missing.empty() ? "" : ", ") + f;
    if (!missing.empty())
      fail(kFailure, "this CPU lacks ", missing, ", which the bundle's target ", q(m.target),
           " requires; recompile with a target this host supports");
    if (std::count(m.cpu_features.begin(), m.cpu_features.end(), "amx_tile") && !request_amx())
      fail(kFailure, "the bundle's kernels use AMX tiles, and Linux refused this process their "
           "use (arch_prctl ARCH_REQ_XCOMP_PERM needs Linux 5.16 or newer); recompile with "
           "--disable-pass AmxMatmul");
    return;
  }
}

void write_output(const fs::path& dir, const Spec& spec, const ffi::Tensor& t, bool raw) {
  std::string file = spec.name;
  std::replace(file.begin(), file.end(), '/', '_');  // an ONNX name is not a path
  fs::path path = dir / (file + (raw ? ".bin" : ".npy"));
  std::string dtype(ffi::DLDataTypeToString(t.dtype()));
  const DType* d = find_dtype(dtype);
  if (!t.IsContiguous()) fail(kFailure, "output ", q(spec.name), " is not contiguous");
  if (!raw && !d)
    fail(kFailure, "output ", q(spec.name), " has dtype ", dtype, ", which .npy cannot hold; "
                   "use --raw");
  std::string header;
  if (!raw) {
    std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
    std::string dims = join(shape, [](int64_t s) { return std::to_string(s); }, "(",
                            shape.size() == 1 ? ",)" : ")");
    header = cat("{'descr': '", d->size == 1 ? '|' : '<', d->kind, d->size,
                 "', 'fortran_order': False, 'shape': ", dims, ", }");
    header += std::string(63 - (10 + header.size()) % 64, ' ') + "\n";  // aligns the data
    header = cat("\x93NUMPY", '\x01', '\x00', static_cast<char>(header.size() & 0xff),
                 static_cast<char>(header.size() >> 8), header);
  }
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(static_cast<const char*>(t.data_ptr()) + t.byte_offset(),
          static_cast<std::streamsize>(ffi::GetDataSize(t.numel(), t.dtype())));
  if (!f.flush()) fail(kFailure, "cannot write ", q(path.string()), ": ", std::strerror(errno));
}

struct Args {
  std::string bundle, output_dir;
  std::vector<std::pair<std::string, std::string>> inputs;
  bool raw = false;
  long repeat = 1, warmup = 1, threads = 0;
};

constexpr const char* kUsage =
    "usage: mlc-runner BUNDLE_DIR [--input NAME=FILE]... [--output-dir DIR] [--raw]\n"
    "                  [--repeat N] [--warmup N] [--threads N]\n";

Args parse_args(int argc, char** argv) {
  Args a;
  auto number = [](const std::string& option, const std::string& v, long min) {
    char* end;
    errno = 0;
    long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end || errno || n < min || n > 1000000000)
      fail(kBadInput, option, " needs an integer >= ", min, ", got ", q(v));
    return n;
  };
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    if (arg == "-h" || arg == "--help") std::fputs(kUsage, stdout), std::exit(0);
    if (arg == "--raw") {
      a.raw = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) {
      if (!a.bundle.empty()) fail(kBadInput, "unexpected argument ", q(arg), "; see --help");
      a.bundle = arg;
      continue;
    }
    size_t eq = arg.find('=');
    if (eq != std::string::npos) value = arg.substr(eq + 1), arg.resize(eq);
    if (arg != "--input" && arg != "--output-dir" && arg != "--repeat" && arg != "--warmup" &&
        arg != "--threads")
      fail(kBadInput, "unknown option ", q(arg), "; see --help");
    if (eq == std::string::npos && i + 1 >= argc) fail(kBadInput, arg, " needs a value");
    if (eq == std::string::npos) value = argv[++i];
    if (arg == "--input") {
      size_t sep = value.find('=');
      if (sep == std::string::npos || sep == 0 || sep + 1 == value.size())
        fail(kBadInput, "--input needs NAME=FILE, got ", q(value));
      a.inputs.emplace_back(value.substr(0, sep), value.substr(sep + 1));
    } else if (arg == "--output-dir") {
      a.output_dir = value;
    } else {
      (arg == "--repeat" ? a.repeat : arg == "--warmup" ? a.warmup : a.threads) =
          number(arg, value, arg == "--warmup" ? 0 : 1);
    }
  }
  if (a.bundle.empty()) fail(kBadInput, "no bundle directory given; see --help");
  return a;
}

int run(int argc, char** argv) {
  Args args = parse_args(argc, argv);
  if (!fs::is_directory(args.bundle))
    fail(kBadInput, "bundle directory ", q(args.bundle), " does not exist");
  if (!fs::exists(fs::path(args.bundle) / "manifest.json"))
    fail(kBadInput, q(args.bundle), " is not an mlc bundle: it has no manifest.json");
  fs::path bundle = fs::canonical(args.bundle);  // the module loader needs an absolute path
  Manifest m = read_manifest(bundle);

  // Inputs: the names first (as loader.py's _arrange), then each file's dtype and shape.
  std::vector<const std::string*> files(m.inputs.size(), nullptr);
  for (const auto& [name, file] : args.inputs) {
    auto it = std::find_if(m.inputs.begin(), m.inputs.end(),
                           [&](const Spec& s) { return s.name == name; });
    if (it == m.inputs.end())
      fail(kBadInput, "unknown input ", q(name), "; the model's inputs are: ",
           join(m.inputs, [](const Spec& s) { return s.name; }, "", ""));
    if (files[it - m.inputs.begin()]) fail(kBadInput, "input ", q(name), " was given twice");
    files[it - m.inputs.begin()] = &file;
  }
  for (size_t i = 0; i < m.inputs.size(); ++i)
    if (!files[i])
      fail(kBadInput, "missing input ", q(m.inputs[i].name), " (", describe(m.inputs[i]),
           "); give it with --input ", m.inputs[i].name, "=FILE");
  std::vector<ffi::Tensor> tensors;
  std::map<std::string, int64_t> bound;  // symbolic dim -> the size the inputs give it
  for (size_t i = 0; i < m.inputs.size(); ++i) {
    Input in = read_input(m.inputs[i], *files[i]);
    check_input(m.inputs[i], in, &bound);
    tensors.push_back(ffi::Tensor::FromNDAlloc(
        OwnedAlloc(), ffi::ShapeView(in.shape.data(), in.shape.size()),
        ffi::StringToDLDataType(in.dtype->name), kCPU));
    std::memcpy(tensors.back().data_ptr(), &in.bytes[in.offset], in.bytes.size() - in.offset);
  }
  check_host(m);

  // TVM sizes its thread pool from TVM_NUM_THREADS when the pool starts, at the first call.
  cpu_set_t cpus;
  if (args.threads > 0)
    setenv("TVM_NUM_THREADS", std::to_string(args.threads).c_str(), 1);
  else if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0)
    setenv("TVM_NUM_THREADS", std::to_string(CPU_COUNT(&cpus)).c_str(), 0);
  // libtvm_runtime.so is linked in; the others (sort, top-k, ...) must be loaded globally.
  for (const std::string& lib : m.runtime_libs)
    if (!dlopen((bundle / "lib" / lib).c_str(), RTLD_NOW | RTLD_GLOBAL))
      fail(kFailure, "cannot load runtime library ", q(lib), ": ", dlerror());
  ffi::Module library = ffi::Module::LoadFromFile((bundle / "model.so").string());

  // Weights: a private (copy-on-write) mapping, loaded lazily; its offsets are 64-aligned.
  std::vector<ffi::Tensor> weights;
  if (!m.weights.empty()) {
    fs::path path = bundle / "weights.bin";
    int fd = open(path.c_str(), O_RDONLY);
    if (fd < 0) fail(kFailure, "cannot open ", q(path.string()), ": ", std::strerror(errno));
    off_t end = lseek(fd, 0, SEEK_END);
    uint64_t size = end > 0 ? static_cast<uint64_t>(end) : 0;
    void* base = size ? mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0) : nullptr;
    close(fd);
    if (base == MAP_FAILED) fail(kFailure, "cannot map ", q(path.string()));
    for (const Weight& w : m.weights) {
      if (w.offset > size || w.nbytes > size - w.offset)
        fail(kFailure, "weights.bin is shorter than the manifest says: the bundle is damaged");
      weights.push_back(ffi::Tensor::FromNDAlloc(
          ViewAlloc{static_cast<char*>(base) + w.offset},
          ffi::ShapeView(w.shape.data(), w.shape.size()), ffi::StringToDLDataType(w.dtype->name),
          kCPU));
    }
  }

  auto function = [](const ffi::Module& module, const char* name) {
    ffi::Optional<ffi::Function> f = module->GetFunction(ffi::String(name));
    if (!f.has_value()) fail(kFailure, "the bundle's module has no function ", q(name));
    return *f;
  };
  ffi::Module vm = function(library, "vm_load_executable")().cast<ffi::Module>();
  function(vm, "vm_initialization")(static_cast<int>(kDLCPU), 0, kPooledAllocator,
                                    static_cast<int>(kDLCPU), 0, kPooledAllocator);
  if (args.threads > 0)  // as loader.py does when asked for a thread count
    if (auto config = ffi::Function::GetGlobal("runtime.config_threadpool"))
      (*config)(0, static_cast<int>(args.threads));
  ffi::Function main_function = function(vm, "main");

  std::vector<ffi::AnyView> call_args(tensors.begin(), tensors.end());
  call_args.insert(call_args.end(), weights.begin(), weights.end());
  ffi::Any result;
  std::vector<double> ms;
  for (long i = 0; i < args.warmup + args.repeat; ++i) {
    auto start = std::chrono::steady_clock::now();
    main_function.CallPacked(call_args.data(), static_cast<int32_t>(call_args.size()), &result);
    std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
    if (i >= args.warmup) ms.push_back(took.count());
  }

  std::vector<ffi::Tensor> outputs;  // one output comes back bare, several as an Array
  if (auto single = result.as<ffi::Tensor>()) {
    outputs.push_back(*single);
  } else if (auto many = result.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& item : *many) {
      auto t = item.as<ffi::Tensor>();
      if (!t) fail(kFailure, "the model returned a ", item.GetTypeKey(), " instead of a tensor");
      outputs.push_back(*t);
    }
  }
  if (outputs.size() != m.outputs.size())
    fail(kFailure, "the model returned ", outputs.size(), " outputs; the manifest lists ",
         m.outputs.size());
  if (!args.output_dir.empty()) {
    std::error_code ec;
    fs::create_directories(args.output_dir, ec);
    if (ec) fail(kFailure, "cannot create ", q(args.output_dir), ": ", ec.message());
    for (size_t i = 0; i < outputs.size(); ++i)
      write_output(args.output_dir, m.outputs[i], outputs[i], args.raw);
  }

  std::sort(ms.begin(), ms.end());
  size_t n = ms.size();
  double median = n % 2 ? ms[n / 2] : (ms[n / 2 - 1] + ms[n / 2]) / 2;  // statistics.median
  std::printf("latency_ms min=%.4f median=%.4f p90=%.4f runs=%zu\n", ms[0], median,
              ms[static_cast<size_t>(0.9 * (n - 1))], n);  // p90 as compiler/api.py takes it
  return 0;
}

std::string one_line(std::string s) {
  // One line, whatever a file name, a damaged header or a TVM error message holds.
  auto control = [](char c) { return static_cast<unsigned char>(c) < 0x20; };
  std::replace_if(s.begin(), s.end(), control, ' ');
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const Fail& e) {
    std::fprintf(stderr, "error: %s\n", one_line(e.message).c_str());
    return e.code;
  } catch (const ffi::Error& e) {  // from TVM: a failing kernel, a model.so that cannot load
    std::fprintf(stderr, "error: %s: %s\n", e.kind().c_str(), one_line(e.message()).c_str());
    return kFailure;
  } catch (const std::exception& e) {  // out of memory, a filesystem error
    std::fprintf(stderr, "error: %s\n", one_line(e.what()).c_str());
    return kFailure;
  }
}
