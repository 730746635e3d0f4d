"""Exceptions of Processor. Each carries the same message the C ABI gives for the same failure."""


class ProcessorError(Exception):
    """Base class of every error Processor raises on purpose."""


class ConfigError(ProcessorError, ValueError):
    """The JSON configuration is wrong. `field` names the offending key ('' when the whole document is)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"config field '{field}': {message}" if field else message)


class ModelLoadError(ProcessorError):
    """A model version could not be discovered, loaded or restored."""


class RequestError(ProcessorError):
    """process() answered with a non-200 code; `code` is that code (400, 500 or 503)."""

    def __init__(self, code: int, message: str):
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class StoreError(ModelLoadError):
    """A model store (OSS, HDFS, the local cache) failed. `transient`: worth retrying (network errors,
    server errors), as opposed to denied access, a missing object or a full disk."""

    def __init__(self, message: str, transient: bool = False):
        self.transient = transient
        super().__init__(message)
