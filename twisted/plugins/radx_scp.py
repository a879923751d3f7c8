"""The `twistd radx-scp` plugin: one ServiceMaker over radx.app.tap."""

from twisted.application.service import ServiceMaker

radx_scp = ServiceMaker(
    "radx DICOM SCP",
    "radx.app.tap",
    "A DICOM receiving server: C-ECHO and C-STORE, files on disk.",
    "radx-scp",
)
