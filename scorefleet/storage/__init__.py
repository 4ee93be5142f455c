"""What scorefleet keeps in S3: the I/O itself (:mod:`.s3io`), the run records
(:mod:`.ledger`), the published outcomes (:mod:`.outcome`) and the ``.error``
document (:mod:`.errordoc`)."""
