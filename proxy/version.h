/* version.h — lifeline's version, stated once: `lifeline --version`, the start-up log line and the
 * admin listener's /status read it from here. */
#ifndef LIFELINE_VERSION_H
#define LIFELINE_VERSION_H

#define LIFELINE_VERSION "0.1.0"

#endif
