"""The session group: how `session_num` and `select_session_policy` are served.

DeepRec's session group runs `session_num` TensorFlow sessions that share one set of variables, so that
concurrent requests do not contend for one session's thread pool. Through TensorFlow's C API separate
sessions cannot share variables (each has its own resource manager): N sessions would hold N copies of
every embedding table. Processor gets the same isolation without the copies: one session, one set of
variables, and `session_num` inter-op thread pools in it; each request runs on one pool, chosen
per run (RunOptions.inter_op_thread_pool) by the data plane without locks:

  "MOD" (default)  a thread keeps its pool (thread number modulo session_num): a host's worker threads
                   spread evenly over the pools, and each thread's work stays on warm threads;
  "RR"             round robin over the pools, request by request.

`inter_op_parallelism_threads` sizes each pool; left at 0 with session_num > 1, the cores are shared
out among the pools. With `enable_inline_execute` requests run in the calling thread and the pools are
not used.
"""
from __future__ import annotations

from typing import Dict

from .config import ProcessorConfig


def pool_threads(config: ProcessorConfig) -> int:
    """Threads per serving pool: inter_op_parallelism_threads, or by default the cores shared out among
    the pools (one pool per core each would oversubscribe the machine: measured 40 % fewer requests/s
    with 2 pools of 2 threads than with 1 on 2 cores). With enable_inline_execute no request uses them."""
    if config.enable_inline_execute:
        return 1  # requests run in the calling thread: the serving pools only have to exist
    if config.inter_op_parallelism_threads > 0 or config.session_num == 1:
        return config.inter_op_parallelism_threads
    import os
    return max(1, (os.cpu_count() or 1) // config.session_num)


def apply_openmp_settings(config: ProcessorConfig) -> Dict[str, str]:
    """Exports omp_num_threads / kmp_blocktime as OMP_NUM_THREADS / KMP_BLOCKTIME, unless the host set
    them already. The tensorflow-cpu wheel links no OpenMP runtime (its oneDNN kernels use TF's own
    thread pools), so on this build they reach only other OpenMP libraries in the process, and only
    those that start after this call. Returns what was set."""
    import os
    wanted = {"OMP_NUM_THREADS": config.omp_num_threads, "KMP_BLOCKTIME": config.kmp_blocktime}
    applied = {}
    for name, value in wanted.items():
        if value is not None and name not in os.environ:
            os.environ[name] = applied[name] = str(value)
    return applied
