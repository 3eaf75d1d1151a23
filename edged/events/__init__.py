"""Object events' media on the device: best snapshots, clips, and the bounded store holding them.

:class:`~edged.events.recorder.EventRecorder` follows each tracked object
from its event's ``start`` to its ``end``: it keeps the best frame, writes it
as JPEG (full and cropped) into the :class:`~edged.events.store.EventStore`,
optionally records an MP4 with pre- and post-roll, and then publishes the
``end`` event naming those files (README "Events").
"""
