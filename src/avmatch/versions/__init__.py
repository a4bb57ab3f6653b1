"""Musical version identification (CLEWS line): CQT segments, contrastive encoder, MAP / MR1 / NAR."""
