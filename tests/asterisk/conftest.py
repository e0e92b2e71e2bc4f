"""The real-PBX fixtures for these tests.

Imported rather than named in ``pytest_plugins``: another test module may already have imported
tests.realpbx.fixtures, and registering it as a plugin afterwards warns (warnings are errors).
"""

from tests.realpbx.fixtures import (  # noqa: F401 - fixtures are found by name
    ami_credentials,
    korean_speech_wav,
    realpbx,
    recordings_dir,
    sip,
)
