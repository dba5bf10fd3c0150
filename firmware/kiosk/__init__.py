# The kiosk application: hardware-free logic. Nothing in this package imports
# `machine`; everything physical comes in through a board object (boards/).
