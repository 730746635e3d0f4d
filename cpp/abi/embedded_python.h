// The bridge from the C ABI to the Python control plane.
//
// initialize() in a process without Python starts an interpreter (once per process), loading libpython
// with dlopen(); in a process that already runs Python it uses that interpreter. The library never links
// libpython, so a Python host (processor._core) and a C host (through the shim) load the very same engine.
#pragma once

#include <string>

#include "common/status.h"

namespace processor {

// Runs processor.hosts.c_host.initialize(entry, config); on success *handle is the model handle.
Status StartControlPlane(const std::string& model_entry, const std::string& model_config, void** handle);

// Runs processor.hosts.c_host.rollback(handle, version) and returns its ABI code.
int RollbackControlPlane(void* handle, long long version);

// Runs processor.hosts.c_host.finalize(handle): stops background work and releases the model.
void StopControlPlane(void* handle);

}  // namespace processor
