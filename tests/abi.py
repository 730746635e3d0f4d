"""ctypes access to the C ABI of the installed library, as a foreign host would see it."""
from __future__ import annotations

import ctypes
import json
from typing import Optional, Tuple

import processor


class CAbi:
    def __init__(self):
        lib = ctypes.CDLL(processor.library_path())
        lib.initialize.restype = ctypes.c_void_p
        lib.initialize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
        lib.process.restype = ctypes.c_int
        lib.process.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                                ctypes.POINTER(ctypes.c_int)]
        lib.process_as.restype = ctypes.c_int
        lib.process_as.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                   ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int)]
        lib.get_serving_model_info.restype = ctypes.c_int
        lib.get_serving_model_info.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
                                               ctypes.POINTER(ctypes.c_int)]
        lib.rollback.restype = ctypes.c_int
        lib.rollback.argtypes = [ctypes.c_void_p, ctypes.c_longlong]
        lib.free_buffer.argtypes = [ctypes.c_void_p]
        lib.finalize.argtypes = [ctypes.c_void_p]
        self.lib = lib

    def initialize(self, config, entry: bytes = b"") -> Tuple[Optional[int], int]:
        state = ctypes.c_int(12345)
        text = config if isinstance(config, (bytes, type(None))) else json.dumps(config).encode()
        handle = self.lib.initialize(entry, text, ctypes.byref(state))
        return handle, state.value

    def _take(self, out: ctypes.c_void_p, size: ctypes.c_int) -> bytes:
        data = ctypes.string_at(out.value, size.value) if out.value else b""
        self.lib.free_buffer(out)
        return data

    def process(self, handle, request: bytes) -> Tuple[int, bytes]:
        out, size = ctypes.c_void_p(), ctypes.c_int()
        code = self.lib.process(handle, request, len(request), ctypes.byref(out), ctypes.byref(size))
        return code, self._take(out, size)

    def process_as(self, handle, format: int, request: bytes) -> Tuple[int, bytes]:
        out, size = ctypes.c_void_p(), ctypes.c_int()
        code = self.lib.process_as(handle, format, request, len(request), ctypes.byref(out), ctypes.byref(size))
        return code, self._take(out, size)

    def model_info(self, handle) -> Tuple[int, bytes]:
        out, size = ctypes.c_void_p(), ctypes.c_int()
        code = self.lib.get_serving_model_info(handle, ctypes.byref(out), ctypes.byref(size))
        return code, self._take(out, size)

    def finalize(self, handle) -> None:
        self.lib.finalize(handle)
