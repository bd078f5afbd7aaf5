"""chinwag.protocol: sans-I/O frames, codecs, envelopes, ids and errors."""
