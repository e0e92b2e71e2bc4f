"""Voice channel: Asterisk over AMI (call tracking, click-to-call) and FastAGI (routing with context).

Entry point: :class:`gateway.channels.voice.channel.VoiceChannel` with the ``[voice]`` settings
(:class:`gateway.channels.voice.settings.VoiceSettings`). Bus events are defined in
:mod:`gateway.domain.calls`.
"""
