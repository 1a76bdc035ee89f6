"""Named params profiles: ``<name>.yaml`` holds only the keys that differ from ``params.yaml``.

Apply one with ``python -m auxseg.tools.apply_profile NAME`` (see :mod:`auxseg.tools.apply_profile`).
"""
