"""Dataset preparation: the datasets configs declare, checked and collated (`gym dataset collate`)."""
