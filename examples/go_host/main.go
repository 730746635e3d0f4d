// A Go HTTP server that embeds Processor through cgo: libserving_processor.so is dlopen()ed with plain
// flags and called from net/http's goroutines, each request on its own OS thread.
//
//	go_host LIBRARY CONFIG.json [--address HOST:PORT]
//
// POST /predict   body: a serialized PredictRequest (protos/predict.proto); 200 with the serialized
//                 PredictResponse, or the library's code (400, 503, 500) with its message as text/plain.
// GET  /model_info  the serialized ServingModelInfo.
//
// Prints "listening on HOST:PORT" once it serves (port 0 picks a free one). SIGTERM or SIGINT stops it:
// in-flight requests finish (up to 5 s), the model is finalized, it prints "stopped" and exits 0.
// Build: go build (Debian: apt-get install golang-go); only the standard library and libc are used.
package main

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

// The C ABI of include/processor.h, resolved from the library at run time.
typedef struct {
	void* (*initialize)(const char*, const char*, int*);
	int (*process)(void*, const void*, int, void**, int*);
	int (*get_serving_model_info)(void*, void**, int*);
	void (*free_buffer)(void*);
	void (*finalize)(void*);
} processor_api;

static processor_api api;

static const char* load_library(const char* path) {
	void* handle = dlopen(path, RTLD_NOW);
	if (!handle) return dlerror();
	api.initialize = dlsym(handle, "initialize");
	api.process = dlsym(handle, "process");
	api.get_serving_model_info = dlsym(handle, "get_serving_model_info");
	api.free_buffer = dlsym(handle, "free_buffer");
	api.finalize = dlsym(handle, "finalize");
	if (!api.initialize || !api.process || !api.get_serving_model_info || !api.free_buffer || !api.finalize)
		return "the library lacks a function of processor.h";
	return NULL;
}
static void* call_initialize(const char* config, int* state) { return api.initialize("", config, state); }
static int call_process(void* model, const void* in, int in_size, void** out, int* out_size) {
	return api.process(model, in, in_size, out, out_size);
}
static int call_model_info(void* model, void** out, int* out_size) {
	return api.get_serving_model_info(model, out, out_size);
}
static void call_free_buffer(void* buffer) { api.free_buffer(buffer); }
static void call_finalize(void* model) { api.finalize(model); }
*/
import "C"

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
	"unsafe"
)

// Model is an initialized model handle; its methods may be called from any goroutine.
type Model struct{ handle unsafe.Pointer }

// answer copies a buffer the library returned into Go memory and releases it with free_buffer().
func answer(code C.int, data unsafe.Pointer, size C.int) (int, []byte) {
	defer C.call_free_buffer(data)
	if data == nil {
		return int(code), nil
	}
	return int(code), C.GoBytes(data, size)
}

// Process runs one serialized PredictRequest; the code is the library's (200, 400, 500, 503).
func (m Model) Process(request []byte) (int, []byte) {
	var in unsafe.Pointer
	if len(request) > 0 {
		in = unsafe.Pointer(&request[0]) // Go memory without Go pointers: may be passed for the call
	}
	var out unsafe.Pointer
	var size C.int
	code := C.call_process(m.handle, in, C.int(len(request)), &out, &size)
	return answer(code, out, size)
}

// ModelInfo returns the serialized ServingModelInfo.
func (m Model) ModelInfo() (int, []byte) {
	var out unsafe.Pointer
	var size C.int
	code := C.call_model_info(m.handle, &out, &size)
	return answer(code, out, size)
}

func reply(w http.ResponseWriter, code int, body []byte) {
	if code == 200 {
		w.Header().Set("Content-Type", "application/x-protobuf")
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.WriteHeader(code)
	w.Write(body)
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: go_host LIBRARY CONFIG.json [--address HOST:PORT]")
		os.Exit(2)
	}
	address := "127.0.0.1:8080"
	for i := 3; i+1 < len(os.Args); i += 2 {
		if os.Args[i] == "--address" {
			address = os.Args[i+1]
		}
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	library := C.CString(os.Args[1])
	defer C.free(unsafe.Pointer(library))
	if err := C.load_library(library); err != nil {
		fmt.Fprintf(os.Stderr, "go_host: %s\n", C.GoString(err))
		os.Exit(1)
	}
	config, err := os.ReadFile(os.Args[2])
	if err != nil {
		fmt.Fprintf(os.Stderr, "go_host: %v\n", err)
		os.Exit(1)
	}
	cConfig := C.CString(string(config))
	defer C.free(unsafe.Pointer(cConfig))
	var state C.int
	handle := C.call_initialize(cConfig, &state)
	if handle == nil {
		os.Exit(1) // the library said why on stderr
	}
	model := Model{handle}

	mux := http.NewServeMux()
	mux.HandleFunc("/predict", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST a serialized PredictRequest", http.StatusMethodNotAllowed)
			return
		}
		request, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		code, body := model.Process(request)
		reply(w, code, body)
	})
	mux.HandleFunc("/model_info", func(w http.ResponseWriter, r *http.Request) {
		code, body := model.ModelInfo()
		reply(w, code, body)
	})
	listener, err := net.Listen("tcp", address)
	if err != nil {
		fmt.Fprintf(os.Stderr, "go_host: %v\n", err)
		C.call_finalize(handle)
		os.Exit(1)
	}
	server := &http.Server{Handler: mux}
	fmt.Printf("listening on %s\n", listener.Addr())
	done := make(chan struct{})
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		server.Shutdown(ctx)
		close(done)
	}()
	if err := server.Serve(listener); err != http.ErrServerClosed {
		fmt.Fprintf(os.Stderr, "go_host: %v\n", err)
	}
	<-done
	C.call_finalize(handle)
	fmt.Println("stopped")
}
