"""Site validation: validate and calibrate a checkpoint on a site's own series, import the
radiologists' outcomes and follow live performance (``validate``, ``calibrate``, ``outcomes``,
``performance``, ``report``, ``labels_file``)."""
