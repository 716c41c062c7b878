"""Cold items: the validation split and model (``validation``), the text maps (ridge and
``knn``, chosen in ``maps``) and the merge of projected with WALS scores (``merge``, chosen
in ``merge_choice``)."""
