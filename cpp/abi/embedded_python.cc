#include "abi/embedded_python.h"

#include <Python.h>
#include <dlfcn.h>
#include <sys/stat.h>

#include <cstdint>
#include <mutex>

#include "common/logging.h"

// Set by the build: the libpython and interpreter the package was built for.
#ifndef PROCESSOR_LIBPYTHON
#error "PROCESSOR_LIBPYTHON must name the libpython shared library"
#endif
#ifndef PROCESSOR_PYTHON_EXECUTABLE
#error "PROCESSOR_PYTHON_EXECUTABLE must name the base interpreter"
#endif

namespace processor {
namespace {

// The Python C API, resolved at run time. Only functions: macros such as Py_DECREF would reference
// libpython symbols at link time.
struct PythonApi {
  decltype(&Py_IsInitialized) IsInitialized;
  decltype(&PyConfig_InitPythonConfig) ConfigInitPythonConfig;
  decltype(&PyConfig_SetBytesString) ConfigSetBytesString;
  decltype(&PyConfig_Clear) ConfigClear;
  decltype(&Py_InitializeFromConfig) InitializeFromConfig;
  decltype(&PyStatus_Exception) StatusException;
  decltype(&PyEval_SaveThread) EvalSaveThread;
  decltype(&PyGILState_Ensure) GILStateEnsure;
  decltype(&PyGILState_Release) GILStateRelease;
  decltype(&PyImport_ImportModule) ImportModule;
  decltype(&PyObject_GetAttrString) GetAttrString;
  decltype(&PyObject_CallFunction) CallFunction;
  decltype(&PyLong_AsUnsignedLongLong) LongAsUnsignedLongLong;
  decltype(&PyErr_Occurred) ErrOccurred;
  decltype(&PyErr_Fetch) ErrFetch;
  decltype(&PyErr_Clear) ErrClear;
  decltype(&PyObject_Str) ObjectStr;
  decltype(&PyUnicode_AsUTF8) UnicodeAsUTF8;
  decltype(&Py_DecRef) DecRef;
};

template <typename T>
bool Resolve(void* library, const char* name, T* fn, std::string* missing) {
  *fn = reinterpret_cast<T>(dlsym(library, name));
  if (!*fn) *missing += std::string(missing->empty() ? "" : ", ") + name;
  return *fn != nullptr;
}

Status ResolveApi(void* library, PythonApi* api) {
  std::string missing;
  Resolve(library, "Py_IsInitialized", &api->IsInitialized, &missing);
  Resolve(library, "PyConfig_InitPythonConfig", &api->ConfigInitPythonConfig, &missing);
  Resolve(library, "PyConfig_SetBytesString", &api->ConfigSetBytesString, &missing);
  Resolve(library, "PyConfig_Clear", &api->ConfigClear, &missing);
  Resolve(library, "Py_InitializeFromConfig", &api->InitializeFromConfig, &missing);
  Resolve(library, "PyStatus_Exception", &api->StatusException, &missing);
  Resolve(library, "PyEval_SaveThread", &api->EvalSaveThread, &missing);
  Resolve(library, "PyGILState_Ensure", &api->GILStateEnsure, &missing);
  Resolve(library, "PyGILState_Release", &api->GILStateRelease, &missing);
  Resolve(library, "PyImport_ImportModule", &api->ImportModule, &missing);
  Resolve(library, "PyObject_GetAttrString", &api->GetAttrString, &missing);
  Resolve(library, "PyObject_CallFunction", &api->CallFunction, &missing);
  Resolve(library, "PyLong_AsUnsignedLongLong", &api->LongAsUnsignedLongLong, &missing);
  Resolve(library, "PyErr_Occurred", &api->ErrOccurred, &missing);
  Resolve(library, "PyErr_Fetch", &api->ErrFetch, &missing);
  Resolve(library, "PyErr_Clear", &api->ErrClear, &missing);
  Resolve(library, "PyObject_Str", &api->ObjectStr, &missing);
  Resolve(library, "PyUnicode_AsUTF8", &api->UnicodeAsUTF8, &missing);
  Resolve(library, "Py_DecRef", &api->DecRef, &missing);
  if (!missing.empty()) return Status::Internal("libpython lacks: " + missing);
  return Status::Ok();
}

bool IsFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string Dirname(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// <site-packages>/processor/libserving_processor_engine.so -> <site-packages>
std::string SitePackagesOfThisLibrary() {
  Dl_info info;
  if (!dladdr(reinterpret_cast<void*>(&StartControlPlane), &info) || !info.dli_fname) return "";
  return Dirname(Dirname(info.dli_fname));
}

// The interpreter to impersonate: the virtualenv's python when the package lives in one, so that the
// interpreter finds the venv's site-packages exactly as `python` run from it would.
std::string ProgramName(const std::string& site_packages) {
  const std::string prefix = Dirname(Dirname(Dirname(site_packages)));  // <prefix>/lib/pythonX.Y/site-packages
  if (IsFile(prefix + "/pyvenv.cfg") && IsFile(prefix + "/bin/python3")) return prefix + "/bin/python3";
  return PROCESSOR_PYTHON_EXECUTABLE;
}

class EmbeddedPython {
 public:
  static EmbeddedPython& Get() {
    static EmbeddedPython* instance = new EmbeddedPython();  // never destroyed: Python outlives statics
    return *instance;
  }

  Status Ready() {
    std::call_once(once_, [this] { status_ = Start(); });
    return status_;
  }

  const PythonApi& api() const { return api_; }

  // Fetches and clears the pending exception as "Type: message".
  std::string TakeError() {
    PyObject *type = nullptr, *value = nullptr, *traceback = nullptr;
    api_.ErrFetch(&type, &value, &traceback);
    std::string message = "unknown Python error";
    if (PyObject* text = value ? api_.ObjectStr(value) : nullptr) {
      if (const char* utf8 = api_.UnicodeAsUTF8(text)) message = utf8;
      api_.DecRef(text);
    }
    api_.ErrClear();
    for (PyObject* o : {type, value, traceback}) {
      if (o) api_.DecRef(o);
    }
    return message;
  }

 private:
  Status Start() {
    void* library = RTLD_DEFAULT;
    if (!dlsym(RTLD_DEFAULT, "Py_IsInitialized")) {
      // RTLD_GLOBAL: extension modules imported later resolve the C API from it.
      library = dlopen(PROCESSOR_LIBPYTHON, RTLD_NOW | RTLD_GLOBAL);
      if (!library) {
        return Status::Internal(std::string("cannot load the Python runtime for the control plane (") +
                                PROCESSOR_LIBPYTHON + "): " + dlerror());
      }
    }
    PROCESSOR_RETURN_IF_ERROR(ResolveApi(library, &api_));
    if (!api_.IsInitialized()) {
      const std::string program = ProgramName(SitePackagesOfThisLibrary());
      PyConfig config;
      api_.ConfigInitPythonConfig(&config);
      config.install_signal_handlers = 0;  // the host owns its signals
      config.parse_argv = 0;
      PyStatus status = api_.ConfigSetBytesString(&config, &config.program_name, program.c_str());
      if (!api_.StatusException(status)) status = api_.InitializeFromConfig(&config);
      api_.ConfigClear(&config);
      if (api_.StatusException(status)) {
        return Status::Internal(std::string("cannot start the embedded Python interpreter (") + program +
                                "): " + (status.err_msg ? status.err_msg : "unknown error"));
      }
      api_.EvalSaveThread();  // release the GIL: from here on every call takes it with PyGILState_Ensure
      Log(LogLevel::kInfo, "started the embedded Python control plane (" + program + ")");
    }
    return Status::Ok();
  }

  std::once_flag once_;
  Status status_;
  PythonApi api_{};
};

// Holds the GIL for a scope.
class GilLock {
 public:
  explicit GilLock(const PythonApi& api) : api_(api), state_(api.GILStateEnsure()) {}
  ~GilLock() { api_.GILStateRelease(state_); }

 private:
  const PythonApi& api_;
  PyGILState_STATE state_;
};

// Calls processor.hosts.c_host.<function>(format, ...) and returns its integer result.
template <typename... Args>
Status CallHostModule(EmbeddedPython& python, const char* function, unsigned long long* result, const char* format,
                      Args... args) {
  const PythonApi& api = python.api();
  GilLock gil(api);
  PyObject* module = api.ImportModule("processor.hosts.c_host");
  if (!module) return Status::Internal("cannot import the control plane (processor.hosts.c_host): " + python.TakeError());
  PyObject* fn = api.GetAttrString(module, function);
  api.DecRef(module);
  if (!fn) return Status::Internal(python.TakeError());
  PyObject* value = api.CallFunction(fn, format, args...);
  api.DecRef(fn);
  if (!value) return Status::Internal(python.TakeError());
  *result = api.LongAsUnsignedLongLong(value);
  api.DecRef(value);
  if (api.ErrOccurred()) return Status::Internal(python.TakeError());
  return Status::Ok();
}

}  // namespace

Status StartControlPlane(const std::string& model_entry, const std::string& model_config, void** handle) {
  EmbeddedPython& python = EmbeddedPython::Get();
  PROCESSOR_RETURN_IF_ERROR(python.Ready());
  unsigned long long address = 0;
  PROCESSOR_RETURN_IF_ERROR(
      CallHostModule(python, "initialize", &address, "ss", model_entry.c_str(), model_config.c_str()));
  *handle = reinterpret_cast<void*>(static_cast<uintptr_t>(address));
  return *handle ? Status::Ok() : Status::Internal("the control plane returned no model");
}

int RollbackControlPlane(void* handle, long long version) {
  EmbeddedPython& python = EmbeddedPython::Get();
  Status status = python.Ready();
  unsigned long long code = 0;
  if (status.ok()) {
    status = CallHostModule(python, "rollback", &code, "KL",
                            static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(handle)), version);
  }
  if (!status.ok()) {
    Log(LogLevel::kError, "rollback failed: " + status.message());
    return status.http_code();
  }
  return static_cast<int>(code);
}

void StopControlPlane(void* handle) {
  EmbeddedPython& python = EmbeddedPython::Get();
  if (!python.Ready().ok()) return;  // no control plane ever started, so no handle can be ours
  unsigned long long unused = 0;
  Status status = CallHostModule(python, "finalize", &unused, "K",
                                 static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(handle)));
  if (!status.ok()) Log(LogLevel::kError, "finalize failed: " + status.message());
}

}  // namespace processor
