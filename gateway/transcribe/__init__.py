"""Voicemail transcription with Vosk in worker processes.

Public surface: :class:`gateway.transcribe.service.TranscriptionService` (async start/stop,
``enqueue``, ``retry``, ``snapshot``, ``health``, ``status``), :class:`gateway.transcribe.config.TranscribeConfig`
(the ``[transcribe]`` section), :func:`gateway.transcribe.model.check_model` (for
``gateway doctor``) and :func:`gateway.transcribe.audio.load_audio`. Only this package imports vosk,
and only in worker processes.
"""
