"""The ext-plugin wire protocol: framing and the FlatBuffers codec. No I/O happens here."""
