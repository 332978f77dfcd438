"""anyecg_edge/io"""
