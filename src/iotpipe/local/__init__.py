"""``iotpipe local``: the whole pipeline on one machine, from the same rendered template, without AWS."""
