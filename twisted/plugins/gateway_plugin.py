from twisted.application.service import ServiceMaker

gateway = ServiceMaker("gateway", "gateway.tap", "POP3 and IMAP over one shared mail store.", "gateway")
