"""The cause of a Spark failure in one line, as the library that raised it states it.

A failure reaches Python as a ``Py4JJavaError`` or a PySpark ``CapturedException`` whose text
is a wrapper (``An error occurred while calling o47.parquet``) followed by hundreds of lines of
Java stack. The cause a person can act on (``No space left on device``, ``not a Parquet
file``) is the message of the innermost Java exception. No pyspark import: the module only
walks the objects it is given.
"""

from __future__ import annotations

import re

# Spark's error-class prefix (``[FAILED_READ_FILE.NO_HINT] ``): a code for machines.
_ERROR_CLASS = re.compile(r"^\[[A-Z0-9_.]+\]\s*")
_MAX_CHARS = 400

# Remedies for a file an engine cannot read, by what the file is: both engines word them alike.
RAW_FILE_REMEDY = ("Replace it with a good copy (or re-run the DMS task for the table) and run again; "
                   "the table's state was left unchanged.")


def lake_file_remedy(table: str) -> str:
    """A table's own data file cannot be read: DMS never wrote it, so a DMS re-run cannot replace it."""
    return ("The lake's own file is damaged: restore it from a copy (a previous S3 object version, a "
            f"backup) under the same name, or rebuild the table from its LOAD files with `dmscdc run "
            f"--full-refresh {table}` (the DAG's full_refresh param); the table's state was left unchanged.")


class MergeInputError(Exception):
    """Input the merge cannot use; names the table, the file and what to do about it.

    :param lake_file: ``file`` is one of the lake table's data files, not a planned DMS file
        (the result's ``error`` then says ``"lake_file": true``, docs/plan-and-result.md).
    """

    def __init__(self, table: str, file: str | None, problem: str, remedy: str, *, lake_file: bool = False):
        self.table, self.file, self.problem, self.remedy, self.lake_file = table, file, problem, remedy, lake_file
        where = f" in {file}" if file else ""
        super().__init__(f"{table}: {problem}{where}. {remedy}")

    def to_dict(self) -> dict:
        error = {"table": self.table, "file": self.file, "problem": self.problem, "remedy": self.remedy}
        if self.lake_file:
            error["lake_file"] = True
        return error


def root_cause(error: BaseException) -> str:
    """The innermost cause's message, one line (the Python error's own text when no Java
    exception is attached)."""
    messages = [_one_line(m) for m in _java_messages(error)]
    return next((m for m in reversed(messages) if m), None) or _python_message(error)


def failure_text(error: BaseException) -> str:
    """Every message in the failure's chain, whole: where to look for the file it names (PySpark's
    own text leaves out the Java causes unless its JVM stack trace setting is on)."""
    return "\n".join([str(error), *_java_messages(error)])


def _java_messages(error: BaseException) -> list[str]:
    java = _java_throwable(error)
    messages = []
    while java is not None and len(messages) < 50:  # a cause chain can loop; 50 is far past any real one
        messages.append(java.getMessage() or "")
        java = java.getCause()
    return messages


def _java_throwable(error: BaseException):
    # Py4JJavaError keeps the Java exception as ``java_exception``; PySpark's converted
    # exceptions (AnalysisException ...) keep it as ``_origin``.
    for attribute in ("java_exception", "_origin"):
        throwable = getattr(error, attribute, None)
        if throwable is not None:
            return throwable
    cause = error.__cause__ or error.__context__
    return _java_throwable(cause) if cause is not None else None


def _python_message(error: BaseException) -> str:
    text = getattr(error, "desc", None) or str(error) or type(error).__name__
    return _one_line(text)


def _one_line(text: str) -> str:
    line = _ERROR_CLASS.sub("", one_line(str(text)))
    return line if len(line) <= _MAX_CHARS else line[: _MAX_CHARS - 3] + "..."


def unreadable_lake_file(table: str, path: str, cause: str) -> MergeInputError:
    """A lake file the merge listed (or the plan pinned) and could not read. In the usual case a
    run that committed the table meanwhile replaced it: the caller reports that as a conflict
    (``runner.complete_attempt``). With the table's state unchanged, the file was removed or
    damaged outside dmscdc and the table is rebuilt from its LOAD files."""
    return MergeInputError(
        table, path, f"cannot read the lake file ({cause})",
        lake_file_remedy(table), lake_file=True)


def one_line(text: str) -> str:
    """A message's first line, with the lines it goes on to when it ends in ``:`` (``Column
    [v] cannot be read as:`` then the type), up to a Java stack frame: the whole cause in one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    taken = [lines[0]]
    for line in lines[1:]:
        if not taken[-1].endswith(":") or line.startswith(("at ", "Caused by:")):
            break
        taken.append(line)
    return " ".join(taken)
