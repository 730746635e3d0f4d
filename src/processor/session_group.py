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

`inter_op_parallelism_threads` sizes each pool. With `enable_inline_execute` requests run in the
calling thread and the pools are not used.
"""
from __future__ import annotations

from typing import Dict

from .config import ProcessorConfig


def session_group_options(config: ProcessorConfig) -> Dict[str, str]:
    """The data plane's load options for the session group."""
    return {"session_num": str(config.session_num), "select_session_policy": config.select_session_policy}
